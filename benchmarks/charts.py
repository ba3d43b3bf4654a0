"""PNG charts of results.json (matplotlib, Agg backend): one per section that ran.

python benchmarks/charts.py [results.json]     # redraw from a saved run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS

GEOFENCE, PEER, REFERENCE, BARE = "#1f6feb", "#d1242f", "#8c959f", "#57606a"
REFERENCES = {"noop", "floor"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9})
    return plt


def _save(fig: Any, folder: Path, name: str) -> Path:
    path = folder / name
    fig.tight_layout()
    fig.savefig(path)
    fig.clf()
    return path


def inprocess(plt: Any, section: dict[str, Any], folder: Path) -> Path:
    frameworks = [fw for fw in section if not fw.startswith("_")]
    fig, axes = plt.subplots(1, len(frameworks), figsize=(6.5 * len(frameworks), 4.2), squeeze=False)
    for ax, fw in zip(axes[0], frameworks, strict=True):
        rows = [(k, v) for k, v in section[fw]["variants"].items() if k != "bare"]
        labels = [v["label"].removeprefix("+ ") for _, v in rows]
        values = [max(v["added_us"], 0.01) for _, v in rows]
        colors = [PEER if k.startswith("guard") else REFERENCE if k in REFERENCES else GEOFENCE for k, _ in rows]
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("µs added per request over the bare app (log scale)")
        ax.set_xlim(right=max(values) * 4)
        ax.set_title(f"{fw}: bare app {section[fw]['variants']['bare']['us']:.1f} µs/request")
        for y, (value, (_, v)) in enumerate(zip(values, rows, strict=True)):
            ax.text(value, y, f" {v['added_us']:+.1f}", va="center", fontsize=8)
    fig.suptitle("In-process added cost (geofence blue, fastapi-guard red, references grey)")
    return _save(fig, folder, "inprocess_added.png")


def rules(plt: Any, section: dict[str, Any], folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sizes = [int(s) for s in section["new"]]
    for kind, style in (("new", "o-"), ("repeated", "s--")):
        ax.plot(sizes, [section[kind][str(s)]["added_us"] for s in sizes], style, color=GEOFENCE,
                label="path never seen before" if kind == "new" else "same path again")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("route rules in the policy")
    ax.set_ylabel("µs added per request")
    ax.set_title(f"Route rules (bare app {section['bare_us']:.1f} µs)")
    ax.legend()
    return _save(fig, folder, "rules_growth.png")


def clients(plt: Any, section: dict[str, Any], folder: Path) -> Path:
    fig, (ax, rss) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = [int(s) for s in section]
    runs = [section[str(s)] for s in sizes]
    ax.plot(sizes, [r["added_mean_us"] for r in runs], "o-", color=GEOFENCE, label="mean added")
    ax.plot(sizes, [r["geofence"]["p99"] for r in runs], "^-", color=REFERENCE, label="p99 (total)")
    ax.plot(sizes, [r["geofence"]["p99.9"] for r in runs], "s--", color=PEER, label="p99.9 (total)")
    ax.plot(sizes, [r["bare"]["p99.9"] for r in runs], ":", color=BARE, label="bare app p99.9")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.set_yscale("log")
    ax.set_xlabel("distinct clients")
    ax.set_ylabel("µs per request (log scale)")
    ax.set_title("Distinct clients: per-request latency in process")
    ax.legend()
    rss.bar([f"{s:,}" for s in sizes], [r["rss_growth_kib"] / 1024 for r in runs], color=GEOFENCE)
    rss.set_ylabel("MiB")
    rss.set_title("RSS growth over the run")
    return _save(fig, folder, "clients_growth.png")


def citydb(plt: Any, section: dict[str, Any], folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    labels = ["reader.get", "Locator lookup (miss)", "middleware cold, added"]
    values = [section["get_ns"] / 1000, section["locator_ns"] / 1000, section["middleware_added_ns"] / 1000]
    ax.barh(labels, values, color=[REFERENCE, GEOFENCE, GEOFENCE])
    ax.invert_yaxis()
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.1f} µs ({value * 1000 / section['get_ns']:.2f}x)", va="center", fontsize=8)
    ax.set_xlim(right=max(values) * 1.35)
    ax.set_xlabel("µs per lookup")
    ax.set_title(f"City-sized database ({section['networks']:,} networks): cost per new network")
    return _save(fig, folder, "citydb.png")


def e2e(plt: Any, section: dict[str, Any], folder: Path) -> Path:
    fig, (tput, lat) = plt.subplots(1, 2, figsize=(11, 4))
    pools = list(section["pools"])
    x = range(len(pools))
    width = 0.38
    for i, (name, color) in enumerate((("bare", BARE), ("geofence", GEOFENCE))):
        offsets = [p + (i - 0.5) * width for p in x]
        tput.bar(offsets, [section["pools"][p][name]["rps"] for p in pools], width, color=color, label=name)
        lat.bar(offsets, [section["pools"][p][name]["p99"] / 1000 for p in pools], width, color=color, label=name)
    for p, pool in zip(x, pools, strict=True):
        r = section["pools"][pool]
        top = max(r["bare"]["rps"], r["geofence"]["rps"])
        tput.text(p, top * 1.02, f"geofence {r['throughput_ratio']:.2f}x bare", ha="center", va="bottom")
        top = max(r["bare"]["p99"], r["geofence"]["p99"]) / 1000
        lat.text(p, top * 1.02, f"{r['p99_ratio']:.2f}x bare", ha="center", va="bottom")
    labels = [f"{int(p):,} clients" for p in pools]
    for ax, title, unit in ((tput, "Throughput", "requests/s"), (lat, "p99 latency", "ms")):
        ax.set_xticks(list(x), labels)
        ax.set_ylabel(unit)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.12)
        ax.set_title(f"{title} (uvicorn, 1 worker; wrk -c{section['connections']})")
    lat.legend(loc="upper left")
    return _save(fig, folder, "e2e.png")


def draw(results: dict[str, Any], folder: Path = RESULTS) -> list[Path]:
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for key, chart in (("inprocess", inprocess), ("rules", rules), ("clients", clients), ("citydb", citydb),
                       ("e2e", e2e)):  # fmt: skip
        if results.get(key):
            drawn.append(chart(plt, results[key], folder))
    plt.close("all")
    return drawn


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "results.json"
    for path in draw(json.loads(source.read_text()), source.parent):
        print(path)
