"""`python -m arcdae_fast.manipulate --run DIR --out DIR --attribute NAME [--scales -0.3 0
0.3] [--images F ... | --split S [--index I ...]] [--n 4] [--steps S]`

Edits an attribute as DiffAE does: a linear classifier on standardised codes, trained on the
run's labelled training split (epoch picked on the validation split), then
z' = z + s * sqrt(D) * w/|w| for each scale s, decoded from each image's inverted x_T.
Writes OUT/manipulate_<NAME>.png (a row per image: the original, then one column per scale)
and OUT/manipulate_<NAME>.json: the classifier's logit of each edited code and of the
re-encoded edited image (the second says whether the decoder carried the edit out).
`--list` prints the dataset's attributes.
"""

from __future__ import annotations

import sys

import torch

from . import apps


def work(a) -> int:
    m = apps.open_model(a)
    if a.list:
        print("\n".join(m.attributes()))
        return 0
    if not a.attribute:
        raise apps.errors.UserError("manipulate: --attribute NAME is required (--list shows them)")
    x = apps.inputs(m, a, a.n)
    apps.say(a, f"fitting the {a.attribute} classifier on the training split's codes")
    d = m.direction(a.attribute)
    edits = m.manipulate(x, a.attribute, a.scales, a.steps or None)  # (S, N, 3, R, R)
    z = m.encode(x)
    code_logits = [d.logit(m.edit_codes(z, a.attribute, s)).tolist() for s in a.scales]
    image_logits = [d.logit(m.encode(e)).tolist() for e in edits]
    rows = [torch.cat([x[i : i + 1], edits[:, i]]) for i in range(len(x))]
    path = apps.save_grid(a.out / f"manipulate_{a.attribute}.png", rows)
    apps.save_json(
        a.out / f"manipulate_{a.attribute}.json",
        {
            "attribute": a.attribute,
            "scales": a.scales,
            "logit_of_edited_code": code_logits,
            "logit_of_reencoded_image": image_logits,
        },
    )
    apps.say(
        a,
        f"-> {path}; mean logit of the re-encoded edits per scale: "
        + ", ".join(
            f"{s:+g}: {torch.tensor(v).mean():.2f}" for s, v in zip(a.scales, image_logits)
        ),
    )
    return 0


def main(argv=None) -> int:
    p = apps.parser("manipulate", __doc__)
    p.add_argument("--attribute", default=None, help="an attribute name of the dataset")
    p.add_argument("--scales", type=float, nargs="+", default=[-0.3, -0.15, 0.0, 0.15, 0.3])
    p.add_argument("--n", type=int, default=4, help="images of the split (without --index)")
    p.add_argument("--list", action="store_true", help="print the attributes and exit")
    return apps.main(work, apps.parse(p, argv))


if __name__ == "__main__":
    sys.exit(main())
