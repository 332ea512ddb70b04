"""The rest provider's own settings: paths, field names, the model and the auth."""

from __future__ import annotations

from dataclasses import dataclass, field

from retouch.sdk import ConfigReader, Secret

REQUEST_FIELDS = (
    "image",
    "mask",
    "prompt",
    "negative_prompt",
    "strength",
    "guidance_scale",
    "steps",
    "seed",
    "model",
    "direction",
    "pixels",
)
"""Our names for the request body's fields; ``fields`` maps them to the vendor's."""

ANSWER_FIELDS = {
    "result": "image",
    "result_url": "url",
    "seed": "seed",
    "credits": "credits",
}
"""Where the answer's values are (dotted paths); ``answer_fields`` overrides them."""


@dataclass(frozen=True, slots=True)
class RestSettings:
    """Everything about the vendor's API beyond plain HTTP."""

    api_key: Secret | None
    model: str = "default"
    inpaint_path: str = "/images/inpaint"
    outpaint_path: str = "/images/outpaint"
    fields: dict[str, str] = field(default_factory=lambda: {n: n for n in REQUEST_FIELDS})
    answer_fields: dict[str, str] = field(default_factory=lambda: dict(ANSWER_FIELDS))
    send_seed: bool = True
    idempotency_header: str = "Idempotency-Key"
    max_outpaint_px: int = 2048

    @classmethod
    def read(cls, read: ConfigReader) -> RestSettings:
        """Read the rest provider's keys (see the package docstring)."""
        fields = {n: n for n in REQUEST_FIELDS}
        fields.update(_names(read, "fields", REQUEST_FIELDS))
        answer_fields = dict(ANSWER_FIELDS)
        answer_fields.update(_names(read, "answer_fields", tuple(ANSWER_FIELDS)))
        return cls(
            api_key=read.secret("api_key", required=False),
            model=read.string("model", "default"),
            inpaint_path=read.string("inpaint_path", "/images/inpaint"),
            outpaint_path=read.string("outpaint_path", "/images/outpaint"),
            fields=fields,
            answer_fields=answer_fields,
            send_seed=read.boolean("send_seed", True),
            idempotency_header=read.string("idempotency_header", "Idempotency-Key"),
            max_outpaint_px=read.integer("max_outpaint_px", 2048, minimum=1, maximum=16384),
        )


def _names(read: ConfigReader, key: str, known: tuple[str, ...]) -> dict[str, str]:
    table = read.table(key)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(
            f"provider 'rest': config table {key!r} has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(known)}"
        )
    names: dict[str, str] = {}
    for name, value in table.items():
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"provider 'rest': {key}.{name} must be a non-empty string, got {value!r}"
            )
        names[name] = value
    return names
