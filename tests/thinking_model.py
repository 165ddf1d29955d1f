"""The embedded model as a "thinking model": its weights with a chat template that has a thinking switch.

No thinking model is available offline, so the thinking tests use the embedded SmolLM2 weights (linked, not
copied) under a ChatML template with Qwen3's ``enable_thinking`` switch and R1's open tag: thinking on (or
the switch unset) ends the generation prompt in ``<think>\\n``; ``enable_thinking=False`` writes an empty
``<think>\\n\\n</think>\\n\\n`` block instead. The folder is a plain model folder: every verb takes it as
``--model``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

THINKING_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


def make_thinking_model(source: str | Path, folder: str | Path) -> str:
    """A model folder at ``folder``: ``source``'s weights and tokenizer, :data:`THINKING_TEMPLATE`."""
    src, out = Path(source), Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in ("chat_template.jinja", "tokenskip_source.json") or not f.is_file():
            continue
        if f.suffix == ".safetensors":
            (out / f.name).symlink_to(f.resolve())
        else:
            shutil.copy(f, out / f.name)
    (out / "chat_template.jinja").write_text(THINKING_TEMPLATE, encoding="utf-8")
    return str(out)
