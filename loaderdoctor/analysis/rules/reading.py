"""Rules on a sample's own cost outside (or before) the random part of the pipeline:
slow-read (reading/decoding in __getitem__, outside the transforms) and cacheable-prefix
(the deterministic prefix of the pipeline, with the measured what-if of caching it)."""

from __future__ import annotations

import os

from loaderdoctor.analysis.rules.common import (
    THRESHOLDS,
    Finding,
    _loader_matters,
    _pct,
)
from loaderdoctor.analysis.rules.weigh import impact_of


def _wait(r: dict) -> float:
    return (r.get("baseline") or {}).get("data_wait_fraction") or 0.0


def _frames_text(rd: dict) -> str:
    frames = rd.get("frames") or []
    if not frames:
        return ""
    where = "; ".join(f"{f['function']} at {os.path.basename(f['file'] or '?')}:{f['line']} ({_pct(f['share'])})"
                      for f in frames)
    return f" Sampled every 20 ms in the workers ({rd['frame_samples']} samples while reading), it spends in: {where}."


def rule_slow_read(r: dict) -> list[Finding]:
    rd = (r.get("data") or {}).get("read")
    if not rd or rd["share"] < THRESHOLDS["slow_read_share"] or not _loader_matters(r):
        return []
    info = r.get("pipeline") or {}
    ev = (f"Of {rd['sample_ms']:.2f} ms per sample fetched in the loader's processes ({rd['samples']} samples, "
          f"transforms stage), the transform pipeline ({info.get('path')}) and the collate took "
          f"{rd['sample_ms'] - rd['read_ms']:.2f} ms; the rest of __getitem__ — reading and decoding — took "
          f"{rd['read_ms']:.2f} ms ({_pct(rd['share'])}).{_frames_text(rd)}")
    fix = ("Make each read cheaper: store the data pre-resized (or pre-decoded) offline at the size training uses; "
           "decode at reduced size where the format allows (PIL Image.draft for JPEG, a decoder's reduce/scale "
           "option); or use a faster decoder (pillow-simd, libjpeg-turbo via torchvision.io.decode_jpeg, a "
           "faster codec such as lz4/zstd for your own blobs). The samples the pipeline receives stay the same.")
    return [Finding("slow-read", "warning", f"Reading/decoding takes {_pct(rd['share'])} of each sample's time", ev, fix,
                    impact=impact_of(rd["share"] * _wait(r), r))]


def rule_cacheable_prefix(r: dict) -> list[Finding]:
    c = (r.get("data") or {}).get("cache")
    if not c or c.get("status") != "ok" or not _loader_matters(r):
        return []
    before = (c.get("uncached") or {}).get("samples_per_s")
    after = (c.get("cached") or {}).get("samples_per_s")
    if not before or not after or after < before * THRESHOLDS["cache_prefix_gain"]:
        return []
    prefix = ", ".join(c["prefix"])
    rest = f"; it ends before {c['stopped_at']}" if c.get("stopped_at") else " (the whole pipeline)"
    ev = (f"The pipeline's first {len(c['prefix'])} of {c['steps']} steps ({prefix}) look deterministic{rest}. "
          f"Heuristic: {c.get('heuristic')}. Measured on {c['samples']} samples (the prefix took "
          f"{c['fill_ms_per_sample']:.2f} ms per sample in the main process): the loader delivered {before:.1f} "
          f"samples/s with the full pipeline and {after:.1f} samples/s with the prefix's output cached in memory "
          f"({after / before:.2f}x; {(c.get('uncached') or {}).get('batches')} and "
          f"{(c.get('cached') or {}).get('batches')} batches).")
    fix = (f"Cache the output of {prefix} once per sample and run only the rest per epoch: precompute it offline to "
           "disk (numpy/safetensors files the dataset reads), or cache it in __getitem__ (MONAI CacheDataset / "
           "PersistentDataset do this up to the first random transform). Keep every random step after the cache, "
           "so the augmentations still differ per epoch; check the prefix really is deterministic (this is a "
           "heuristic).")
    share = _wait(r) * (1 - before / after)
    return [Finding("cacheable-prefix", "warning", f"Caching the deterministic prefix ({prefix}) loads "
                    f"{after / before:.1f}x faster", ev, fix, impact=impact_of(share, r))]
