"""The README's Python examples, end to end on the embedded SmolLM2 (CI runs this file).

    python examples/quickstart.py [--out runs/example]

Captures states, builds a sign cache over two layers (the whole vocabulary), builds a category
catalog from it, queries it, reads a sentence, and flips a feature during generation. About a
minute on two CPU cores.
"""

import argparse
import tempfile

import torch

import bagofdims as bd
from bagofdims.models import load_tokenizer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write (default: a temporary dir)")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="bagofdims-example-")

    model, tok = bd.load_model(args.model, device="cpu")
    with bd.Capture(model, ["resid.*", "k.3"]) as cap:
        model(**tok(["a batch", "of texts"], return_tensors="pt", padding=True))
    print("captured resid.5:", tuple(cap["resid.5"].shape), "| hooks left:", bd.hook_count(model))

    cache = bd.SignCache.build(model, tok, sites=["resid.4", "resid.8"], progress=False)
    cache.save(f"{out}/cache", overwrite=True)
    cache = bd.SignCache.load(f"{out}/cache", model=model, tokenizer=tok)
    print(cache, "| packed resid.8:", tuple(cache.packed("resid.8").shape))

    cat = bd.Catalog.build(cache, categories="default", sites=["resid.*"], tokenizer=tok,
                           progress=False)
    cat.save(f"{out}/catalog", overwrite=True)
    cat = bd.Catalog.load(f"{out}/catalog", tokenizer=load_tokenizer(args.model))
    # cat[name]: the category's feature at the site its anchors pick (never held-out numbers)
    best = "country" if "country" in cat.names else cat.names[0]
    f = cat[best]
    print(f"{len(cat.names)} categories; {f!r}")
    print("  top tokens:", [t for t, _ in cat.top_tokens(best, k=8)])
    ex = cat.explain_dim(f.site, int(f.dims[0]), k=5)
    print(f"  dim {ex['dim']} ({ex['ranked_by']}):", ex["most_positive"])
    for row in cat.read("Paris and Berlin are cities", model=model, site=f.site)[:4]:
        print(f"  {row['token']!r:>10} -> {row['features']}")

    enc = tok(["Here is a list of countries: France, Spain,"], return_tensors="pt")
    gen = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        base = model.generate(**enc, **gen)
        with bd.sign_flip(model, cat[best], mode="away") as flip:
            flipped = model.generate(**enc, **gen)
    n = enc["input_ids"].shape[1]
    print("baseline :", tok.decode(base[0, n:], skip_special_tokens=True))
    print("flipped  :", tok.decode(flipped[0, n:], skip_special_tokens=True), "|", flip)
    assert bd.hook_count(model) == 0


if __name__ == "__main__":
    main()
