"""How conversations become tokens: the short call format of plain prompts and chat templates with tools."""

from __future__ import annotations

from typing import Any

import pytest

from selfimprove.chat import assistant, tool_call, tool_result, user
from selfimprove.policy.dialogue import ChatDialogue, PlainDialogue, dialogue_for, hermes_parse
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.tiny import build_tiny_model

CALC = {"type": "function", "function": {"name": "calc", "description": "Arithmetic.", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 1+2"}}, "required": ["expression"]}}}
CONVERT = {"type": "function", "function": {"name": "convert", "description": "Money.", "parameters": {
    "type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}}, "required": ["amount", "to"]}}}

# A Hermes / Qwen-style template over the tiny tokenizer's markers: tools listed first, calls written as
# <tool_call>{json}</tool_call> inside the assistant turn, results as user-side turns.
TOOL_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|user|>tools:{% for t in tools %} {{ t.function.name }}{% endfor %}<|end|>{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}"
    "{% for c in m.get('tool_calls', []) %}<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}"
    "</tool_call>{% endfor %}<|end|>"
    "{% elif m['role'] == 'tool' %}<|user|>result: {{ m['content'] }}<|end|>"
    "{% else %}<|user|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def plain() -> HFPolicy:
    model, tokenizer = build_tiny_model("small")
    return HFPolicy(model, tokenizer)


def chat_policy(template: str | None = TOOL_TEMPLATE, eos: str | None = None) -> HFPolicy:
    model, tokenizer = build_tiny_model("small")
    if template is not None:
        tokenizer.chat_template = template
    if eos is not None:
        tokenizer.eos_token = eos
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return HFPolicy(model, tokenizer, chat=True)


def ids(policy: HFPolicy, text: str, eos: bool = False) -> list[int]:
    return policy.encode_completion(text, add_eos=eos)


# ------------------------------------------------------------------------------ the short format
def test_short_calls_parse_with_one_argument_or_a_json_object(plain: HFPolicy) -> None:
    d = PlainDialogue(plain)
    assert d.stop([CALC]) == (">>",) and d.stop([]) == ()
    assert d.parse(ids(plain, "so <<calc 7+5 >>"), [CALC]) == (assistant("so ", [tool_call("calc", {"expression": "7+5"})]), None)
    message, error = d.parse(ids(plain, '<<convert {"amount": 3, "to": "EUR"}>>'), [CONVERT])
    assert error is None and message["tool_calls"] == [tool_call("convert", {"amount": 3, "to": "EUR"})]
    # an unknown tool parses (the environment answers "unknown tool"); a bad one is an error to show the model
    assert d.parse(ids(plain, "<<abacus 1+1>>"), [CALC])[0]["tool_calls"] == [tool_call("abacus", {"input": "1+1"})]
    assert d.parse(ids(plain, "<<convert 3 EUR>>"), [CONVERT])[1].startswith("the arguments are not JSON")
    assert d.parse(ids(plain, "7+5>>"), [CALC])[1] == "malformed call (write <<tool arguments>>)"
    assert d.parse(ids(plain, "<< 7>>"), [CALC])[1] == "malformed call (write <<tool arguments>>)"
    # no call: the final answer, its end token not part of the text; without tools `>>` is only text
    assert d.parse(ids(plain, "12", eos=True), [CALC]) == (assistant("12"), None)
    assert d.parse(ids(plain, "a >> b>>"), []) == (assistant("a >> b>>"), None)


def test_short_format_renders_what_it_parses(plain: HFPolicy) -> None:
    d = PlainDialogue(plain)
    for message, tools in ((assistant("", [tool_call("calc", {"expression": "12*7"})]), [CALC]),
                           (assistant("so ", [tool_call("convert", {"amount": 3, "to": "EUR"})]), [CONVERT]),
                           (assistant("", [tool_call("calc", {"expression": "{1}"})]), [CALC])):
        tokens, text = d.demonstration_turn(message, tools, final=False)
        assert plain.detokenize(tokens) == text and d.parse(tokens, tools) == (message, None)
    tokens, text = d.demonstration_turn(assistant("84"), [CALC], final=True)
    assert text == "84" and tokens[-1] in plain.eos_ids


def test_short_observations_and_the_end_token(plain: HFPolicy) -> None:
    d = PlainDialogue(plain)
    tokens, text = d.observation([tool_result("calc", "84")], None)
    assert text == "=84\n" and plain.detokenize(tokens) == text
    assert d.observation([user("\nagain:")], plain.eos_ids[0])[1] == "\nagain:"
    turn = ids(plain, "12", eos=True)
    assert d.kept(turn, continues=True) == len(turn) - 1  # the conversation goes on: no end token inside it
    assert d.kept(turn, continues=False) == len(turn)
    assert d.start([user("7; +5:\n")], [CALC]) == plain.encode_prompt("7; +5:\n")
    assert isinstance(dialogue_for(plain), PlainDialogue)


# ------------------------------------------------------------------------------ chat templates
def test_chat_start_shows_the_tools_and_ends_at_the_assistant_turn() -> None:
    policy = chat_policy()
    d = dialogue_for(policy)
    assert isinstance(d, ChatDialogue) and d.stop([CALC]) == ()
    text = policy.tokenizer.decode(d.start([user("7+5?")], [CALC]), skip_special_tokens=False)
    assert text == "<bos><|user|>tools: calc<|end|><|user|>7+5?<|end|><|assistant|>"
    assert d.turn_end == "<|end|>"


def test_chat_observations_follow_the_model_turn_exactly() -> None:
    # The model ends its turn with its end token: if that is the template's turn end, it is not repeated.
    policy = chat_policy(eos="<|end|>")
    d = dialogue_for(policy)
    end = policy.tokenizer.convert_tokens_to_ids("<|end|>")
    assert d.observation([tool_result("calc", "12")], end)[1] == "<|user|>result: 12<|end|><|assistant|>"
    assert d.observation([tool_result("calc", "12")], None)[1] == "<|end|><|user|>result: 12<|end|><|assistant|>"
    # The tiny model's own end token is not the template's: the turn is closed after it.
    policy = chat_policy()
    assert dialogue_for(policy).observation([user("again")], policy.eos_ids[0])[1] == "<|end|><|user|>again<|end|><|assistant|>"


def test_the_turn_ends_with_the_end_token_the_template_uses() -> None:
    """Llama 3 lists <|end_of_text|> first and <|eot_id|> after; a turn ends with <|eot_id|>."""
    policy = chat_policy()
    policy.tokenizer.eos_token = "<eos>"
    policy.model.generation_config.eos_token_id = [policy.tokenizer.convert_tokens_to_ids("<eos>"),
                                                   policy.tokenizer.convert_tokens_to_ids("<|end|>")]
    d = dialogue_for(policy)
    end = policy.tokenizer.convert_tokens_to_ids("<|end|>")
    assert d.turn_eos == end
    tokens, _ = d.demonstration_turn(assistant("12"), [CALC], final=False)
    assert tokens[-1] == end
    assert d.observation([user("again")], end)[1] == "<|user|>again<|end|><|assistant|>"


def test_a_template_that_writes_the_last_turn_differently_still_works() -> None:
    """Qwen3 writes an empty think block only in the last assistant turn: observations are read after
    the turn's content, not as a difference of two renderings."""
    qwen3_like = TOOL_TEMPLATE.replace("<|assistant|>{{ m['content'] }}",
                                       "<|assistant|>{% if loop.last %}<think></think>{% endif %}{{ m['content'] }}")
    policy = chat_policy(template=qwen3_like, eos="<|end|>")
    d = dialogue_for(policy)
    end = policy.tokenizer.convert_tokens_to_ids("<|end|>")
    assert d.observation([tool_result("calc", "12")], end)[1] == "<|user|>result: 12<|end|><|assistant|>"


def test_chat_calls_parse_in_the_hermes_form() -> None:
    policy = chat_policy(eos="<|end|>")
    d = dialogue_for(policy)
    tokens = policy.tokenizer('let me see<tool_call>{"name": "calc", "arguments": {"expression": "7+5"}}</tool_call><|end|>',
                              add_special_tokens=False).input_ids
    assert d.parse(tokens, [CALC]) == (assistant("let me see", [tool_call("calc", {"expression": "7+5"})]), None)
    assert hermes_parse('<tool_call>{"name": "calc", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>')[0]["tool_calls"] == [
        tool_call("calc", {"expression": "1"})]  # arguments given as a JSON string
    assert hermes_parse("<tool_call>{oops}</tool_call>")[1] == "malformed call (the <tool_call> block is not JSON)"
    assert hermes_parse("<tool_call>{\"name\": \"calc\"")[1] == "malformed call (an unclosed <tool_call>)"
    assert hermes_parse("12") == (assistant("12"), None)


def test_chat_demonstration_turns_are_what_the_model_would_sample() -> None:
    policy = chat_policy(eos="<|end|>")
    d = dialogue_for(policy)
    message = assistant("", [tool_call("calc", {"expression": "7+5"})])
    tokens, text = d.demonstration_turn(message, [CALC], final=False)
    assert text == '<tool_call>{"name": "calc", "arguments": {"expression": "7+5"}}</tool_call>'
    assert tokens[-1] == policy.tokenizer.convert_tokens_to_ids("<|end|>")
    assert d.parse(tokens, [CALC]) == (message, None)
    # A template that does not write calls (the tiny model's own): the Hermes form is added, so it parses back.
    bare = chat_policy(template=None)
    tokens, text = dialogue_for(bare).demonstration_turn(message, [CALC], final=True)
    assert text == '<tool_call>{"name": "calc", "arguments": {"expression": "7+5"}}</tool_call>'
    assert dialogue_for(bare).parse(tokens, [CALC]) == (message, None)


def test_chat_parsing_uses_the_tokenizers_response_template() -> None:
    policy = chat_policy(eos="<|end|>")
    policy.tokenizer.response_template = {
        "defaults": {"role": "assistant"},
        "start_anchor": "<|assistant|>",
        "fields": {
            "tool_calls": {"open_pattern": r"\s*<tool_call>", "close": "</tool_call>", "repeats": True, "content": "json",
                           "transform": {"type": "function", "function": "{content}"}},
            "content": {"close_pattern": r"\s*<\|end\|>", "content": "text"},
        },
    }
    d = dialogue_for(policy)
    tokens = policy.tokenizer('ok<tool_call>{"name": "calc", "arguments": {"expression": "2*3"}}</tool_call><|end|>',
                              add_special_tokens=False).input_ids
    message, error = d.parse(tokens, [CALC])
    assert error is None and message["tool_calls"] == [tool_call("calc", {"expression": "2*3"})]
    assert message["content"] == "ok"


def test_a_broken_response_template_falls_back_to_the_hermes_form(caplog: pytest.LogCaptureFixture) -> None:
    policy = chat_policy(eos="<|end|>")
    policy.tokenizer.response_template = {"fields": {}}
    d = dialogue_for(policy)
    assert "response_template" in caplog.text
    tokens = policy.tokenizer('<tool_call>{"name": "calc", "arguments": {"expression": "2"}}</tool_call>',
                              add_special_tokens=False).input_ids
    assert d.parse(tokens, [CALC]) == (assistant("", [tool_call("calc", {"expression": "2"})]), None)


def test_a_template_that_hides_assistant_turns_is_refused() -> None:
    hiding = "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}"
    d = dialogue_for(chat_policy(template=hiding))
    with pytest.raises(ValueError, match="does not write an assistant turn's content"):
        d.observation([tool_result("calc", "1")], None)


def test_calls_a_template_writes_in_another_form_are_demonstrated_in_the_form_read_back() -> None:
    """A Llama-3.1-like template writes calls as bare JSON with `parameters`; without a response_template
    the parser reads the Hermes form, so demonstrations use that form."""
    llama_like = TOOL_TEMPLATE.replace(
        "<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>",
        "{{ {'name': c.function.name, 'parameters': c.function.arguments} | tojson }}")
    policy = chat_policy(template=llama_like, eos="<|end|>")
    d = dialogue_for(policy)
    message = assistant("", [tool_call("calc", {"expression": "7+5"})])
    tokens, text = d.demonstration_turn(message, [CALC], final=False)
    assert text == '<tool_call>{"name": "calc", "arguments": {"expression": "7+5"}}</tool_call>'
    assert d.parse(tokens, [CALC]) == (message, None)


def test_a_short_call_cut_inside_a_token_still_parses(plain: HFPolicy) -> None:
    """With a BPE vocabulary the stop fires on a token such as `>>=`: the text after `>>` is ignored."""
    d = PlainDialogue(plain)
    assert d.parse(ids(plain, "<<calc 7+5>>="), [CALC]) == (assistant("", [tool_call("calc", {"expression": "7+5"})]), None)


def _decode(policy: HFPolicy, tokens: list[int]) -> Any:
    return policy.tokenizer.decode(tokens, skip_special_tokens=False)


def test_a_cached_chat_layout_does_not_keep_its_tokenizer_alive() -> None:
    import gc
    import weakref

    policy = chat_policy()
    layout = dialogue_for(policy)
    assert dialogue_for(policy) is layout  # made once per engine and template
    tokenizer = weakref.ref(policy.tokenizer)
    del policy, layout
    gc.collect()
    assert tokenizer() is None
