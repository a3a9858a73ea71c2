"""`arcdae COMMAND [args]`: one console command for every `python -m arcdae_fast.COMMAND`
(`arcdae train --config quickstart.yaml`, `arcdae eval --run RUN`, ...). Each subcommand is
the module's own `main`, so flags, help and exit statuses are the same in both forms."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("arcdae_fast.train", "train a method (--config YAML)"),
    "eval": ("arcdae_fast.eval.cli", "evaluate a trained run (--run RUN --suite ...)"),
    "sample": ("arcdae_fast.sample", "unconditional samples"),
    "reconstruct": ("arcdae_fast.reconstruct", "encode and decode images"),
    "interpolate": ("arcdae_fast.interpolate", "interpolate between two images"),
    "manipulate": ("arcdae_fast.manipulate", "edit an attribute along its direction"),
    "train-latent": ("arcdae_fast.train_latent", "train the latent DDIM of a run"),
    "encode": ("arcdae_fast.encode", "export a dataset's latents"),
    "export": ("arcdae_fast.export", "export for serving (program, aoti, safetensors, ...)"),
    "convert": ("arcdae_fast.convert", "convert a DiffAE checkpoint"),
    "prepare": ("arcdae_fast.data.prepare", "prepare a dataset"),
    "profile": ("arcdae_fast.profile", "profile the training step"),
    "info": ("arcdae_fast.info", "this machine, the op backends and the config keys"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<13} {doc}" for name, (_, doc) in COMMANDS.items())
    return f"usage: arcdae COMMAND [args]   (arcdae COMMAND --help for its flags)\n\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"arcdae: unknown command {name!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"arcdae {name}", *rest]
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
