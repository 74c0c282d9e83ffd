"""Chat messages as one prompt text, through the chat template of the model's tokenizer (the one its owner published
it with), so a chat model sees the turns the way it was trained on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import bad_request


@runtime_checkable
class ChatTokenizer(Protocol):
    """What rendering needs of a tokenizer (Hugging Face tokenizers have it)."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def render(tokenizer: object, messages: Sequence[dict[str, str]], model: str) -> str:
    """The prompt text of `messages` with the assistant's turn opened; a 400 when the tokenizer has no chat template
    (use /v1/completions with a plain prompt) or the template refuses the conversation."""
    if not isinstance(tokenizer, ChatTokenizer) or not tokenizer.chat_template:
        raise bad_request(f"the tokenizer of {model!r} has no chat template, so it cannot take chat messages: send a "
                          f"plain prompt to /v1/completions", "messages")
    try:
        prompt = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                               add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - a template raises what its author wrote (jinja's exceptions, ValueError)
        raise bad_request(f"the chat template of {model!r} refused these messages: {exc}", "messages") from exc
    if not isinstance(prompt, str) or not prompt:
        raise bad_request(f"the chat template of {model!r} rendered no text", "messages")
    return prompt
