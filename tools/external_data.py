"""Moves an ONNX graph's weights into an external data file beside it.

    python tools/external_data.py SRC.onnx DST.onnx    # writes DST.onnx and DST.onnx_data
    python tools/external_data.py fixtures             # the test fixtures below

ONNX external data, as HF optimum writes graphs past 2 GB: the protobuf keeps the graph and
each weight names its bytes in `<file>_data`. Glimpse (tract) reads such weights tensor by
tensor, so a load holds one copy of them instead of two (the protobuf's and tract's), and the
2 GB protobuf limit does not apply. The fixtures (`fixtures/projectors/external/`): `ldp.onnx`
is `fixtures/projectors/ldp.onnx` so written; `outside.onnx` the same graph naming its data
by a path that leaves its directory, which must be refused.
"""
import pathlib
import sys

import onnx


def save_external(model, path):
    """Writes `model` to `path`, its tensors of 1 KB and more to `<path>_data`."""
    path = pathlib.Path(path)
    data = path.with_name(path.name + "_data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)


def fixtures():
    root = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "projectors"
    out = root / "external"
    out.mkdir(exist_ok=True)
    save_external(onnx.load(root / "ldp.onnx"), out / "ldp.onnx")
    outside = onnx.load(out / "ldp.onnx", load_external_data=False)
    for t in outside.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../external/ldp.onnx_data"
    onnx.save(outside, out / "outside.onnx")
    print(f"wrote {out}")


if __name__ == "__main__":
    if sys.argv[1:] == ["fixtures"]:
        fixtures()
    else:
        src, dst = sys.argv[1:3]
        pathlib.Path(dst).parent.mkdir(parents=True, exist_ok=True)
        save_external(onnx.load(src), dst)
        print(f"wrote {dst} and {dst}_data")
