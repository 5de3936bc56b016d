"""A base's own chat template (jinja, rendered by its tokenizer) and where the answers sit in
the text it renders, so that labels can supervise exactly the answers.

The template is read from the base directory as transformers writes it (``chat_template.jinja``,
a processor's ``chat_template.json``, or ``tokenizer_config.json``). Its structure is found by
rendering probe conversations once:

- the *opener*: what the template writes between a user turn and the assistant's answer
  (``"ASSISTANT:"`` for llava-1.5-hf, ``"<|im_start|>assistant\\n"`` for Qwen2.5-VL);
- the *closer*: the special token the template writes right after an answer
  (``"<|im_end|>"``); a template that closes no answer (llava-1.5-hf writes a space) gets the
  tokenizer's EOS appended to every answer, so that the model learns to stop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.errors import UsageError

Turn = tuple[str, str]  # (user message, assistant answer)
_PROBE_QUESTION = "Which shape is it?"
_PROBE_ANSWER = "It is a circle."


def read_chat_template(directory: str | Path, tokenizer: PreTrainedTokenizerBase) -> str:
    """The jinja chat template of a base directory: ``chat_template.jinja``, else the
    processor's ``chat_template.json``, else the tokenizer's own (``tokenizer_config.json``).

    Raises:
        UsageError: none of them holds a template, or a file is unreadable.
    """
    directory = Path(directory)
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    processor_file = directory / "chat_template.json"
    if processor_file.is_file():
        try:
            template = json.loads(processor_file.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
            raise UsageError(
                f"{processor_file} is not a readable chat template ({error})"
            ) from None
        if isinstance(template, str) and template:
            return template
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if isinstance(template, str) and template:
        return template
    raise UsageError(
        f"{directory}: no chat template (expected chat_template.jinja, chat_template.json or a "
        "chat_template in tokenizer_config.json, as the base's own files have)"
    )


def _messages(turns: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """Chat messages with typed text parts, the layout multimodal templates read."""
    messages = []
    for question, answer in turns:
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template with the opener and closer of its answers (see the module docstring).

    Build it with :meth:`probe`.
    """

    source: str  # the jinja text
    tokenizer: PreTrainedTokenizerBase  # renders the template (its special tokens, EOS)
    answer_opener: str  # text right before every answer
    answer_closer: str  # the token right after every answer (written by us when appended)
    closer_appended: bool  # True: the template closes no answer, we append answer_closer (EOS)

    @classmethod
    def probe(cls, source: str, tokenizer: PreTrainedTokenizerBase, where: str) -> ChatTemplate:
        """Find the opener and closer of ``source`` by rendering a one-turn conversation.

        Raises:
            UsageError: the template renders no assistant turn we can find (``where`` names
                the base directory).
        """

        def render(turns, prompt: bool) -> str:
            return _render(source, tokenizer, turns, prompt)

        user_only = render([(_PROBE_QUESTION, None)], False)
        prompt = render([(_PROBE_QUESTION, None)], True)
        whole = render([(_PROBE_QUESTION, _PROBE_ANSWER)], False)
        opener = prompt[len(user_only) :] if prompt.startswith(user_only) else ""
        answer = whole[len(user_only + opener) :].lstrip()
        if (
            not opener
            or not whole.startswith(user_only + opener)
            or not answer.startswith(_PROBE_ANSWER)
        ):
            raise UsageError(
                f"{where}: the chat template writes no assistant turn after a user turn "
                "(add_generation_prompt adds nothing, or the answer does not follow it)"
            )
        after = answer[len(_PROBE_ANSWER) :]
        closer = _leading_special_token(after, tokenizer)
        if closer is None and tokenizer.eos_token is None:
            raise UsageError(f"{where}: the chat template closes no answer and there is no EOS")
        return cls(
            source=source,
            tokenizer=tokenizer,
            answer_opener=opener,
            answer_closer=closer if closer is not None else tokenizer.eos_token,
            closer_appended=closer is None,
        )

    def render(self, turns: Sequence[Turn]) -> str:
        """The whole conversation, each answer closed (EOS appended where the template has no
        closer)."""
        suffix = self.answer_closer if self.closer_appended else ""
        closed = [(question, answer + suffix) for question, answer in turns]
        return _render(self.source, self.tokenizer, closed, False)

    def generation_prompt(self, history: Sequence[Turn], question: str) -> str:
        """``history`` (oldest first) and ``question``, ending where the next answer begins.
        The image placeholder goes in front of the first user message unless it holds one."""
        turns = [*history, (question, None)]
        first_question, first_answer = turns[0]
        if DEFAULT_IMAGE_TOKEN not in first_question:
            turns[0] = (DEFAULT_IMAGE_TOKEN + "\n" + first_question, first_answer)
        suffix = self.answer_closer if self.closer_appended else ""
        closed = [(q, None if a is None else a + suffix) for q, a in turns]
        return _render(self.source, self.tokenizer, closed, True)

    def answer_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans [start, end) of every closed answer in ``text``, each from the end of
        its opener to the end of its closer (an open answer at the end has none)."""
        spans = []
        cursor = text.find(self.answer_opener)
        while cursor >= 0:
            start = cursor + len(self.answer_opener)
            close = text.find(self.answer_closer, start)
            if close < 0:
                break
            spans.append((start, close + len(self.answer_closer)))
            cursor = text.find(self.answer_opener, close)
        return spans


def _render(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    turns: Sequence[tuple[str, str | None]],
    generation_prompt: bool,
) -> str:
    return tokenizer.apply_chat_template(
        _messages(turns),
        chat_template=source,
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


def _leading_special_token(text: str, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The special token ``text`` begins with (after no other character), or None."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if ids and ids[0] in set(tokenizer.all_special_ids):
        token = tokenizer.convert_ids_to_tokens(ids[0])
        if text.startswith(token):
            return token
    return None
