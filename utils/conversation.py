"""Conversation templates (LLaVA's ``llava_v1`` and ``llava_llama_2``) and prompt building.

Templates are looked up by name and handed out as fresh copies, so no caller can change another
caller's template (LLaVA kept a module-level ``default_conversation`` that scripts reassigned).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from enum import Enum

from utils.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN


class SeparatorStyle(Enum):
    """How messages are joined into a prompt."""

    TWO = "two"  # "{system}{sep}ROLE: msg{sep}ROLE: msg{sep2}..." (llava_v1)
    LLAMA_2 = "llama_2"  # "[INST] <<SYS>>...<</SYS>>\n\nmsg [/INST] answer </s><s>[INST] ..."


@dataclasses.dataclass
class Conversation:
    """A chat template plus the messages appended to it."""

    system: str  # system prompt written in front of the first turn
    roles: tuple[str, str]  # (user role, assistant role)
    messages: list[list[str]] = dataclasses.field(default_factory=list)  # [role, text] pairs
    sep_style: SeparatorStyle = SeparatorStyle.TWO
    sep: str = " "  # after the system prompt and user turns (TWO); turn opener "<s>" (LLAMA_2)
    sep2: str = "</s>"  # after assistant turns; splits a conversation into rounds

    def append_message(self, role: str, message: str) -> None:
        """Add one turn; an empty ``message`` leaves the turn open for the model to complete."""
        if role not in self.roles:
            raise ValueError(f"role {role!r} is not one of this template's roles {self.roles}.")
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """The conversation as one string, formatted exactly as LLaVA formats it."""
        if self.sep_style == SeparatorStyle.TWO:
            seps = (self.sep, self.sep2)
            text = self.system + seps[0]
            for i, (role, message) in enumerate(self.messages):
                if message:
                    text += f"{role}: {message}{seps[i % 2]}"
                else:
                    text += f"{role}:"
            return text
        if self.sep_style == SeparatorStyle.LLAMA_2:
            text = ""
            for i, (role, message) in enumerate(self.messages):
                if i == 0 and (not message or role != self.roles[0]):
                    raise ValueError(
                        "a llama-2 conversation must start with a non-empty user turn."
                    )
                if not message:
                    continue
                if i == 0:
                    message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{message}"
                if i % 2 == 0:
                    text += f"{self.sep}[INST] {message} [/INST]"
                else:
                    text += f" {message} {self.sep2}"
            # LLaVA strips the leading "<s>" as a character set, not as a prefix (kept as is).
            return text.lstrip(self.sep)
        raise ValueError(f"unknown separator style {self.sep_style!r}.")

    def copy(self) -> Conversation:
        """An independent copy (messages included)."""
        return copy.deepcopy(self)

    @property
    def answer_separator(self) -> str:
        """The text that ends every instruction and precedes the answer inside a round."""
        if self.sep_style == SeparatorStyle.TWO:
            return self.sep + self.roles[1] + ": "
        return "[/INST] "


_TEMPLATES: dict[str, Conversation] = {
    "llava_v1": Conversation(
        system=(
            "A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."
        ),
        roles=("USER", "ASSISTANT"),
        sep_style=SeparatorStyle.TWO,
        sep=" ",
        sep2="</s>",
    ),
    "llava_llama_2": Conversation(
        system=(
            "You are a helpful language and vision assistant. You are able to understand the "
            "visual content that the user provides, and assist the user with a variety of tasks "
            "using natural language."
        ),
        roles=("USER", "ASSISTANT"),
        sep_style=SeparatorStyle.LLAMA_2,
        sep="<s>",
        sep2="</s>",
    ),
}

CONV_TYPES: tuple[str, ...] = tuple(_TEMPLATES)


def get_conv_template(name: str) -> Conversation:
    """A fresh, empty copy of the template ``name`` (``llava_v1`` or ``llava_llama_2``)."""
    if name not in _TEMPLATES:
        raise ValueError(f"conv_type {name!r} is not one of {', '.join(CONV_TYPES)}.")
    return _TEMPLATES[name].copy()


def wrap_image_token(text: str, use_mm_start_end: bool) -> str:
    """Put ``<im_start>``/``<im_end>`` around every ``<image>`` (once, even if already wrapped)."""
    if not use_mm_start_end:
        return text
    wrapped = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
    return text.replace(wrapped, DEFAULT_IMAGE_TOKEN).replace(DEFAULT_IMAGE_TOKEN, wrapped)


def build_conversation(turns: Sequence[tuple[str, str]], conv_type: str) -> str:
    """A training conversation: each (user text, answer) pair appended as given, then get_prompt().

    The caller puts ``<image>\\n`` in front of the first user text, as LISA's datasets do.
    """
    conv = get_conv_template(conv_type)
    for question, answer in turns:
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def build_chat_prompt(
    user_text: str,
    conv_type: str,
    use_mm_start_end: bool,
    history: Sequence[tuple[str, str]] | None = None,
) -> str:
    """The prompt chat.py sends to the model, ending in an open assistant turn.

    Args:
        user_text: the new user message (plain text, no ``<image>``).
        conv_type: template name (``llava_v1`` or ``llava_llama_2``).
        use_mm_start_end: wrap the image placeholder in ``<im_start>``/``<im_end>``.
        history: earlier (user text, answer) turns about the same image, oldest first.

    The image placeholder and a newline go in front of the first user message of the conversation.
    """
    turns = [*(history or []), (user_text, "")]
    conv = get_conv_template(conv_type)
    for i, (question, answer) in enumerate(turns):
        if i == 0:
            question = wrap_image_token(DEFAULT_IMAGE_TOKEN + "\n" + question, use_mm_start_end)
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()
