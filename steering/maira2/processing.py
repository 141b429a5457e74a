"""The MAIRA-2 reporting prompt, built as the official `format_and_preprocess_reporting_input` does.

The official processor builds one user chat message of text and image items — which sentences
appear depends on which images the study has — renders it with the snapshot's own chat template,
repeats each image placeholder once per image feature (1369 for a 518-px image with patch 14),
and tokenises the result with the tokenizer's special tokens (BOS). Absent text sections become
"N/A"; a prior report appears only when the study has a prior frontal image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering.errors import RadsteerError

MISSING_SECTION = "N/A"

FINDINGS_REQUEST = (
    " Provide a structured description of the findings in the radiology study in comparison to the prior frontal image."
)
GROUNDING_REQUEST = (
    " Each finding should be described as a self-contained plain-text sentence. If the finding is groundable, locate "
    "the finding in the current frontal chest X-ray image, with bounding boxes indicating all locations where it can "
    "be seen in the current frontal image. Otherwise, generate just the ungrounded finding without bounding boxes."
)

Message = dict[str, Any]


def section_text(value: object) -> str:
    """A section's text, or "N/A" when absent (None, not a string, or empty) — as the official processor."""
    if not isinstance(value, str) or len(value) == 0:
        return MISSING_SECTION
    return value


def _text(text: str) -> dict[str, Any]:
    return {"index": None, "text": text, "type": "text"}


def _image(index: int) -> dict[str, Any]:
    return {"index": index, "text": None, "type": "image"}


def image_items(*, has_lateral: bool, has_prior: bool) -> list[dict[str, Any]]:
    """The sentence fragments naming each image, each followed by its image item."""
    if not has_lateral and not has_prior:
        return [_text("Given the current frontal image only"), _image(0)]
    items = [_text("Given the current frontal image"), _image(0)]
    index = 1
    if has_prior:
        if has_lateral:
            items += [_text(" the current lateral image"), _image(index)]
            index += 1
        items += [_text(" and the prior frontal image"), _image(index)]
    else:
        items += [_text(" and the current lateral image"), _image(index)]
    return items


def reporting_messages(
    *,
    has_lateral: bool,
    has_prior: bool,
    indication: object = None,
    technique: object = None,
    comparison: object = None,
    prior_report: object = None,
    grounded: bool = False,
) -> list[Message]:
    """The chat messages of a (grounded) findings request."""
    items = image_items(has_lateral=has_lateral, has_prior=has_prior)
    if has_prior:
        items.append(_text(f" PRIOR_REPORT: {section_text(prior_report)}"))
    request = FINDINGS_REQUEST + (GROUNDING_REQUEST if grounded else "")
    items.append(
        _text(
            f"{request} INDICATION: {section_text(indication)} TECHNIQUE: {section_text(technique)} "
            f"COMPARISON: {section_text(comparison)}"
        )
    )
    return [{"role": "user", "content": items}]


def user_text(messages: list[Message], image_token: str = "<image>") -> str:
    """The user message as one string, each image item shown as one placeholder."""
    parts = []
    for item in messages[0]["content"]:
        parts.append(image_token if item["type"] == "image" else item["text"])
    return "".join(parts)


def find_chat_template(tokenizer: Any, snapshot: str | Path | None) -> str:
    """The snapshot's chat template: the tokenizer's, else chat_template.jinja / chat_template.json."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        return template
    if snapshot is not None:
        snapshot = Path(snapshot)
        jinja = snapshot / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        js = snapshot / "chat_template.json"
        if js.is_file():
            try:
                value = json.loads(js.read_text(encoding="utf-8")).get("chat_template")
            except (json.JSONDecodeError, AttributeError) as exc:
                raise RadsteerError(f"{js} is not valid JSON with a 'chat_template' string: {exc}") from None
            if isinstance(value, str) and value:
                return value
    raise RadsteerError(
        f"no chat template in the MAIRA-2 snapshot {snapshot}: expected 'chat_template' in tokenizer_config.json, "
        "or a chat_template.json / chat_template.jinja file (download the whole microsoft/maira-2 repository)"
    )


@dataclass(frozen=True)
class StudyFlags:
    """Which images a study has (they decide the sentence and the image count)."""

    has_lateral: bool
    has_prior: bool

    @property
    def n_images(self) -> int:
        return 1 + int(self.has_lateral) + int(self.has_prior)


class PromptBuilder:
    """Renders and tokenises reporting prompts with a snapshot's tokenizer and chat template."""

    def __init__(
        self,
        tokenizer: Any,
        chat_template: str,
        *,
        image_token_id: int,
        tokens_per_image: int,
        grounded: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token_id = int(image_token_id)
        self.image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        if not isinstance(self.image_token, str) or tokenizer.convert_tokens_to_ids(self.image_token) != image_token_id:
            raise RadsteerError(
                f"the tokenizer has no token with id {image_token_id} (config.json image_token_index); "
                "tokenizer files and config.json come from different models"
            )
        self.tokens_per_image = int(tokens_per_image)
        self.grounded = grounded

    def messages(self, case: Mapping[str, Any]) -> tuple[list[Message], StudyFlags]:
        flags = StudyFlags(has_lateral=case.get("lateral") is not None, has_prior=case.get("prior_frontal") is not None)
        msgs = reporting_messages(
            has_lateral=flags.has_lateral,
            has_prior=flags.has_prior,
            indication=case.get("indication"),
            technique=case.get("technique"),
            comparison=case.get("comparison"),
            prior_report=case.get("prior_report"),
            grounded=self.grounded,
        )
        return msgs, flags

    def render(self, case: Mapping[str, Any]) -> str:
        """The prompt text with one placeholder per image (as the chat template writes it)."""
        msgs, _ = self.messages(case)
        return self.tokenizer.apply_chat_template(
            msgs, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )

    def ids(self, case: Mapping[str, Any]) -> list[int]:
        """Token ids with each placeholder repeated `tokens_per_image` times, checked."""
        text = self.render(case)
        _, flags = self.messages(case)
        found = text.count(self.image_token)
        if found != flags.n_images:
            raise RadsteerError(
                f"the chat template wrote {found} image placeholder(s) {self.image_token!r} for {flags.n_images} "
                "image(s); the snapshot's chat template does not match MAIRA-2's"
            )
        expanded = text.replace(self.image_token, self.image_token * self.tokens_per_image)
        ids = [int(i) for i in self.tokenizer(expanded)["input_ids"]]
        n = sum(1 for i in ids if i == self.image_token_id)
        if n != flags.n_images * self.tokens_per_image:
            raise RadsteerError(
                f"tokenising the prompt gave {n} image tokens, expected {flags.n_images} × {self.tokens_per_image}; "
                "the tokenizer does not keep the image placeholder as one token"
            )
        return ids
