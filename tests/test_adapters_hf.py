"""The hf adapter on a tiny, randomly initialised GPT-2 that the test builds and saves: nothing is downloaded."""
from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

from framework.adapters import HFAdapter, HFConfig, ask, build_adapter, parse_yes_no  # noqa: E402
from framework.errors import ConfigError  # noqa: E402

WORDS = ("yes no maybe the answer is a cause of x y z does affect ? . , 0 1 2 3 4 5 6 7 8 9 "
         "user assistant system : be brief").split()
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")
PROMPTS = ["does x cause y ?", "is a the cause of z ?", "y", "0 1 2 3 4 5 6 7 8 9 is the answer ?", "maybe x"]


def save_tiny_model(folder, chat_template=None):
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                                eos_token="<eos>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     initializer_range=0.3, bos_token_id=2, eos_token_id=2, pad_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-chat"), TEMPLATE)


def test_greedy_answers_are_deterministic_and_batching_does_not_change_them(plain):
    batched = HFAdapter(HFConfig(path=str(plain), max_new_tokens=6, batch_size=4))
    single = HFAdapter(HFConfig(path=str(plain), max_new_tokens=6, batch_size=1))
    a, b = batched.answer(PROMPTS), single.answer(PROMPTS)
    assert all(r.ok for r in a) and all(isinstance(r.text, str) for r in a)
    # Left padding and the attention mask: each prompt's answer is what it gets alone.
    assert [r.text for r in a] == [r.text for r in b]
    assert len({r.text for r in a}) > 1  # a model that says one thing to everything would prove nothing
    assert [r.text for r in batched.answer(PROMPTS)] == [r.text for r in a]
    assert all(len(r.text.split()) <= 6 for r in a)
    assert batched.identity == single.identity  # batch size does not change answers, so not the identity
    assert batched.identity.startswith(f"hf/{plain.name}@") and not batched.chat


def test_identity_tracks_what_changes_answers(plain, chat):
    base = HFAdapter(HFConfig(path=str(plain)))
    assert HFAdapter(HFConfig(path=str(plain), max_new_tokens=3)).identity != base.identity
    assert HFAdapter(HFConfig(path=str(plain), tag="v2")).identity != base.identity
    assert HFAdapter(HFConfig(path=str(chat), use_chat_template=False)).identity != base.identity  # other files


def test_chat_template_used_when_the_tokenizer_has_one(chat):
    adapter = HFAdapter(HFConfig(path=str(chat), system_prompt="be brief", max_new_tokens=4))
    assert adapter.chat
    assert adapter.format_prompt("does x cause y ?") == "system : be brief user : does x cause y ? assistant :"
    raw = HFAdapter(HFConfig(path=str(chat), use_chat_template=False, system_prompt="be brief"))
    assert raw.format_prompt("does x cause y ?") == "does x cause y ?"
    assert raw.identity != adapter.identity
    assert all(r.ok for r in adapter.answer(PROMPTS[:2]))


def test_chat_template_demanded_but_missing(plain):
    with pytest.raises(ConfigError) as err:
        HFAdapter(HFConfig(path=str(plain), use_chat_template=True))
    assert err.value.field == "use_chat_template"


def test_ask_and_parse_through_the_store(plain, tmp_path):
    adapter = build_adapter({"name": "hf", "path": str(plain), "max_new_tokens": 4})
    first = ask(adapter, PROMPTS, tmp_path / "a.jsonl", progress=False)
    again = ask(adapter, PROMPTS, tmp_path / "a.jsonl", progress=False)
    assert [a.text for a in again] == [a.text for a in first] and all(a.cached for a in again)
    for answer in first:  # random weights say nonsense: parsed or a counted failure, never an exception
        parsed = parse_yes_no(answer.text)
        assert parsed.ok or parsed.reason


def test_a_prompt_too_long_for_the_model_fails_alone(plain):
    adapter = HFAdapter(HFConfig(path=str(plain), max_new_tokens=4, batch_size=3))
    replies = adapter.answer(["y", "x " * 80, "does x cause y ?"])  # 80 tokens > n_positions=64
    assert not replies[1].ok
    assert "prompt of 80 tokens + max_new_tokens=4 exceeds the model's context of 64" in replies[1].error
    assert replies[0].ok and replies[2].ok
    assert [replies[0].text, replies[2].text] == [r.text for r in adapter.answer(["y", "does x cause y ?"])]
