"""``asd-edge bundle verify MODELS/M``: versions, fields, hashes, shapes, one inference, a
summary. ``asd-edge bundle schema [DOCS]``: regenerate (``--check``: compare) the manifest's JSON
schema and its table in DOCS (default ``docs``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from edge.bundle.calibrate import describe_promises, promises
from edge.bundle.load import Bundle, load_bundle
from edge.bundle.schema import main as schema_main
from edge.bundle.system import SectionThreshold
from edge.errors import BadInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="check a bundle and score one second of noise")
    verify.add_argument("path", help="bundle folder (MODELS/<machine>)")
    verify.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    verify.add_argument("--json", action="store_true",
                        help="print the same facts as one JSON document (for scripts); "
                             "same exit codes")
    schema = actions.add_parser("schema", help="write bundle.json's JSON schema and its "
                                               "reference tables into the docs folder")
    schema.add_argument("docs", nargs="?", default="docs", help="the docs folder (docs)")
    schema.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the docs differ from the model")


def run(args: argparse.Namespace) -> int:
    if args.action == "schema":
        return schema_main([*(["--check"] if args.check else []), args.docs])
    bundle = load_bundle(args.path, device=args.device)
    system = bundle.system
    manifest = bundle.manifest
    if not system.sections:
        raise BadInput(f"{bundle.path}: no section has references; re-export or enroll")
    # one inference through the whole path: a second of quiet noise, scored for each section
    rng = np.random.default_rng(0)
    seconds = max(system.patch_seconds, 1.0) + 0.1
    noise = (rng.standard_normal(int(seconds * system.front_end.sample_rate)) * 1e-3).astype(
        np.float32)
    window = system.clip_window(noise)
    scores = {s: system.score_window(window, s)[0] for s in system.sections}
    if args.json:
        print(json.dumps(verify_facts(bundle, scores), indent=2))
        return 0
    members = ", ".join(f"{m.name} (x{m.weight:g})" for m in system.members)
    print(f"{bundle.path}: OK - asd-edge bundle format {manifest.format_version}, "
          f"machine {bundle.machine}")
    print(f"  system: {members}; chosen by {manifest.system.chosen_by}")
    print(f"  provider: {bundle.provider}; files: {len(manifest.files)} (sha256 checked)")
    print(f"  references: {len(manifest.references)} normal clips")
    for section in system.sections:
        t = system.thresholds.get(section)
        limit = describe_thresholds(t) if t else "no threshold"
        print(f"  section_{section:02d}: {limit}; test score {scores[section]:.4g}")
        if t is not None:
            for line in describe_promises(t):
                print(f"    {line}")
        quiet = system.quiet_range(section)
        if quiet is not None:
            print(f"    quiet level of its normal clips: {quiet[0]:.1f} to {quiet[1]:.1f} dB")
    return 0


def verify_facts(bundle: Bundle, scores: dict[int, float]) -> dict[str, Any]:
    """``bundle verify --json``: the facts of the text output as one JSON-able dict."""
    system, manifest = bundle.system, bundle.manifest

    def levels(t: SectionThreshold) -> dict[str, Any]:
        return {"threshold": float(t.threshold), "clear_threshold": float(t.clear_threshold),
                "promises": promises(t),
                "domains": {d: {"threshold": float(own.threshold),
                                "clear_threshold": float(own.clear_threshold)}
                            for d, own in sorted(t.domains.items())}}

    sections: dict[str, Any] = {}
    for section in system.sections:
        t = system.thresholds.get(section)
        quiet = system.quiet_range(section)
        sections[f"section_{section:02d}"] = {
            "section": section, "test_score": float(scores[section]),
            **(levels(t) if t else {"threshold": None}),
            "quiet_db": list(quiet) if quiet is not None else None}
    return {"path": str(bundle.path), "ok": True,
            "format_version": manifest.format_version, "machine": bundle.machine,
            "members": [{"name": m.name, "weight": float(m.weight)} for m in system.members],
            "chosen_by": manifest.system.chosen_by, "provider": bundle.provider,
            "files": len(manifest.files), "sha256_checked": True,
            "references": len(manifest.references), "sections": sections}


def describe_thresholds(levels: SectionThreshold) -> str:
    """``threshold P (source S, target T), clear ...``: the pooled levels and, in brackets,
    each domain's own (only those the bundle calibrated; none for older bundles)."""
    def by_domain(level: str) -> str:
        own = ", ".join(f"{domain} {getattr(levels.domains[domain], level):.4g}"
                        for domain in sorted(levels.domains))
        return f" ({own})" if own else ""

    return (f"threshold {levels.threshold:.4g}{by_domain('threshold')}, "
            f"clear {levels.clear_threshold:.4g}{by_domain('clear_threshold')}")
