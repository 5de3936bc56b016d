import json

import pytest

from utils.conversation import (
    CONV_TYPES,
    Conversation,
    SeparatorStyle,
    build_chat_prompt,
    build_conversation,
    get_conv_template,
    wrap_image_token,
)

V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)
LLAMA2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)


def test_templates_by_name_are_fresh_copies():
    assert set(CONV_TYPES) == {"llava_v1", "llava_llama_2"}
    first = get_conv_template("llava_v1")
    first.append_message("USER", "hello")
    first.system = "changed"
    second = get_conv_template("llava_v1")
    assert second.messages == [] and second.system == V1_SYSTEM
    copied = first.copy()
    copied.messages[0][1] = "other"
    assert first.messages[0][1] == "hello"


def test_template_fields():
    v1 = get_conv_template("llava_v1")
    assert (v1.roles, v1.sep_style, v1.sep, v1.sep2) == (
        ("USER", "ASSISTANT"),
        SeparatorStyle.TWO,
        " ",
        "</s>",
    )
    assert v1.answer_separator == " ASSISTANT: "
    llama2 = get_conv_template("llava_llama_2")
    assert (llama2.system, llama2.sep_style, llama2.sep, llama2.sep2) == (
        LLAMA2_SYSTEM,
        SeparatorStyle.LLAMA_2,
        "<s>",
        "</s>",
    )
    assert llama2.answer_separator == "[/INST] "


def test_unknown_template_and_role_raise():
    with pytest.raises(ValueError, match="conv_type"):
        get_conv_template("vicuna")
    with pytest.raises(ValueError, match="role"):
        get_conv_template("llava_v1").append_message("SYSTEM", "x")


def test_llava_v1_training_conversation():
    text = build_conversation([("<image>\nq1", "a1"), ("q2", "a2")], "llava_v1")
    assert text == f"{V1_SYSTEM} USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>"


def test_llava_v1_open_assistant_turn_has_no_trailing_space():
    conv = get_conv_template("llava_v1")
    conv.append_message("USER", "hi")
    conv.append_message("ASSISTANT", "")
    assert conv.get_prompt() == f"{V1_SYSTEM} USER: hi ASSISTANT:"


def test_llama2_conversation():
    text = build_conversation([("<image>\nq1", "a1"), ("q2", "a2")], "llava_llama_2")
    assert text == (
        f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n<image>\nq1 [/INST] a1 </s>"
        "<s>[INST] q2 [/INST] a2 </s>"
    )


def test_llama2_needs_a_user_message_first():
    conv = get_conv_template("llava_llama_2")
    conv.append_message("ASSISTANT", "a")
    with pytest.raises(ValueError, match="user turn"):
        conv.get_prompt()


def test_custom_conversation_dataclass():
    conv = Conversation(system="sys", roles=("Q", "A"), sep="|", sep2="#")
    conv.append_message("Q", "x")
    conv.append_message("A", "y")
    assert conv.get_prompt() == "sys|Q: x|A: y#"


def test_wrap_image_token_is_idempotent():
    text = "USER: <image>\nhi"
    wrapped = wrap_image_token(text, True)
    assert wrapped == "USER: <im_start><image><im_end>\nhi"
    assert wrap_image_token(wrapped, True) == wrapped
    assert wrap_image_token(text, False) == text


def test_chat_prompt_with_history():
    prompt = build_chat_prompt("q2", "llava_v1", True, history=[("q1", "a1")])
    assert prompt == (
        f"{V1_SYSTEM} USER: <im_start><image><im_end>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
    )
    prompt = build_chat_prompt("q2", "llava_llama_2", False, history=[("q1", "a1")])
    assert prompt == (
        f"[INST] <<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n<image>\nq1 [/INST] a1 </s><s>[INST] q2 [/INST]"
    )


@pytest.mark.reference
def test_chat_prompts_match_reference(tiny_cases_dir):
    cases = json.loads((tiny_cases_dir / "tokenization.json").read_text())["prompt_cases"]
    assert len(cases) == 8
    for case in cases:
        prompt = build_chat_prompt(case["user_text"], case["conv_type"], case["use_mm_start_end"])
        assert prompt == case["prompt"], case["id"]


@pytest.mark.reference
def test_training_conversations_match_reference(tiny_cases_dir):
    expected = json.loads((tiny_cases_dir / "train_forward.json").read_text())["conversation_list"]
    built = [
        build_conversation(
            [("<image>\nCan you segment the red circle in this image?", "Sure, [SEG].")],
            "llava_v1",
        ),
        build_conversation(
            [
                (
                    "<image>\nWhat is blue rectangle in this image? Please output segmentation mask.",
                    "It is [SEG].",
                ),
                (
                    "Please segment the green square in this image.",
                    "Sure, the segmentation result is [SEG].",
                ),
            ],
            "llava_v1",
        ),
    ]
    assert [wrap_image_token(t, True) for t in built] == expected[:2]
