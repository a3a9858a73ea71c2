"""Old key names: the pre-methods layout (`objective.*`, a flat `model.*`) and removed
keys and values, translated to today's keys with a note. A config written in the old layout
keeps meaning what it meant; the resolved config is always written in the new layout, and
`Config.notes` says what was renamed."""

from __future__ import annotations

from typing import Any

from .schema import ConfigError

# ---- aliases: the pre-methods layout -> the new keys ---------------------------------------
ALIASES: dict[str, tuple[str, ...]] = {
    "objective.preset": ("method.name",),
    "objective.backend": ("ops.backend",),
    "model.base_channels": ("model.denoiser.base_channels",),
    "model.channel_mult": ("model.denoiser.channel_mult",),
    "model.num_res_blocks": ("model.denoiser.num_res_blocks",),
    "model.attn_resolutions": ("model.denoiser.attn_resolutions",),
    "model.dropout": ("model.denoiser.dropout",),
    "model.head_channels": ("model.denoiser.head_channels", "model.encoder.head_channels"),
    "model.max_groups": ("model.denoiser.max_groups", "model.encoder.max_groups"),
    "model.enc_base_channels": ("model.encoder.base_channels",),
    "model.enc_channel_mult": ("model.encoder.channel_mult",),
    "model.enc_num_res_blocks": ("model.encoder.num_res_blocks",),
    "model.enc_attn_resolutions": ("model.encoder.attn_resolutions",),
    "model.z_dim": ("model.encoder.z_dim",),
    "model.num_parts": ("method.num_parts",),
    "model.part_key_dim": ("method.part_key_dim",),
    "model.part_dim": ("method.part_dim",),
}
ALIAS_PREFIXES = {"objective.": "method."}  # every other objective.* key is a method key
# values that were removed or renamed: (key, old value) -> (the value that replaces it, why)
REMOVED_VALUES = {
    ("train.step", "reference"): ("eager", "renamed (one word per idea: eager | compiled)"),
    ("train.step", "fast"): ("compiled", "renamed (one word per idea: eager | compiled)"),
    ("train.parallel", "manual"): (
        "ddp",
        "the hand-written all-reduce was removed (measured no faster than DDP, "
        "docs/measurements.md#data-parallel); DDP averages the same gradients",
    ),
}
REMOVED = {
    "model.fused_adagn": "the U-Net always calls the adagn op; for the unfused eager "
    "composition set ops.backend=adagn=reference",
}


def replace_removed_value(key: str, value: Any, notes: list[str] | None) -> Any:
    """A removed value (REMOVED_VALUES) as the value that replaces it, noted; else value."""
    if not isinstance(value, str) or (key, value) not in REMOVED_VALUES:
        return value
    new, why = REMOVED_VALUES[key, value]
    if notes is not None:
        notes.append(f"{key}={value} -> {new}: {why}")
    return new


def legacy_model(model: dict[str, Any]) -> dict[str, Any]:
    """An old flat `model` section with what the old engine built written out: its network
    (arch adm_conv, a 4 x base_channels time embedding) and its defaults that changed (64
    channels per attention head). A config in the old layout keeps meaning what it meant."""
    out = dict(model)
    out["arch"] = "adm_conv"
    out.setdefault("head_channels", 64)
    denoiser = dict(out.get("denoiser") or {})
    denoiser.setdefault("embed_channels", 4 * out.get("base_channels", 128))
    out["denoiser"] = denoiser
    return out


def new_keys(key: str) -> tuple[str, ...]:
    """The key(s) an old dotted key stands for now (the key itself when it is not old)."""
    if key in ALIASES:
        return ALIASES[key]
    for old, new in ALIAS_PREFIXES.items():
        if key.startswith(old):
            return (new + key[len(old) :],)
    return (key,)


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for i, p in enumerate(parents):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: '{'.'.join(parents[: i + 1])}' must be a mapping")
    node[last] = value


def translate(raw: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """raw config in any layout -> the new layout (a new dict); old keys are noted."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: the top level must be a mapping of sections, got {raw!r}")
    for name, v in raw.items():
        if not isinstance(v, dict) and v is not None:
            raise ConfigError(f"config: section '{name}' must be a mapping, got {v!r}")
    model = raw.get("model") or {}
    if "arch" not in model and any(f"model.{k}" in ALIASES for k in model):
        raw = {**raw, "model": legacy_model(model)}
        if notes is not None:
            notes.append("model in the old layout: the old engine's network (model.arch=adm_conv)")
    flat = flatten({k: v for k, v in raw.items() if v is not None})
    out: dict[str, Any] = {k: {} for k, v in raw.items() if v is not None and k != "objective"}
    moved: dict[str, str] = {}
    for key, value in flat.items():
        if key in REMOVED:
            if value is True:  # the old default: nothing to do
                continue
            raise ConfigError(f"config: {key} was removed; {REMOVED[key]}")
        value = replace_removed_value(key, value, notes)
        for new in new_keys(key):
            if new != key:
                if notes is not None:
                    notes.append(f"{key} -> {new}")
                if new in flat and flat[new] != value:
                    raise ConfigError(
                        f"config: {key} (old name of {new}) and {new} are both set, to "
                        f"{value!r} and {flat[new]!r}; keep only {new}"
                    )
                if moved.get(new, value) != value:
                    raise ConfigError(
                        f"config: {key} and {moved[new]} both set {new}, to different values"
                    )
                moved[new] = key
            set_key(out, new, value)
    return out
