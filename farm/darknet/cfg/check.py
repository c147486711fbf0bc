"""check_cfg: every rule of darknet's a cfg breaks, each with its line and the fix.

The seed's cfgs were edited by hand (`filters=(classes+5)*3` in some heads, `classes=` in
others, the test-time `batch=1` left in) and darknet either aborted or trained the wrong
network in silence. Here a cfg is checked against darknet's own rules before any darknet
process sees it, and so is every `--set key=value` given on a command line.
"""
from __future__ import annotations

import difflib

from farm.darknet.cfg.known import (ALEXEYAB_ACTIVATIONS, ALEXEYAB_SECTIONS,
                                    PJREDDIE_ACTIVATIONS, PJREDDIE_SECTIONS)
from farm.darknet.cfg.model import (STRIP, Cfg, Option, Section, filters_formula,
                                    float_list, head_classes, head_filters, head_masks,
                                    head_num, int_list)
from farm.darknet.cfg.values import (NET_KEYS, POLICIES, atoi, round32, value_hint,
                                     value_problem)
from farm.darknet.dialect import Dialect
from farm.errors import BadInput, Finding, Severity

# ---------------------------------------------------------------------------------------
# --set key=value


def validate_net_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """Check `--set key=value` pairs against the [net] keys darknet reads.

    Returns the pairs as darknet will see them (spaces removed). A typo such as
    `max_batch=6000` would otherwise be ignored by darknet, which then trains with its
    default instead, so an unknown key is refused with the closest known ones.
    """
    clean: dict[str, str] = {}
    for raw_key, raw_value in overrides.items():
        key = str(raw_key).translate(STRIP)
        value = str(raw_value).strip()
        if key not in NET_KEYS:
            raise BadInput(f"--set {key}: not a [net] key darknet reads",
                           hint=_suggest(key, NET_KEYS))
        problem = value_problem("net", key, value.translate(STRIP))
        if problem:
            raise BadInput(f"--set {key}={value}: {problem}", hint=value_hint("net", key))
        clean[key] = value.translate(STRIP)
    return clean


def _suggest(key: str, known) -> str:
    lower = {k.lower(): k for k in known}
    close = [lower[key.lower()]] if key.lower() in lower else []
    close += [k for k in difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
              if k not in close]
    if close:
        return "closest known keys: " + ", ".join(close)
    return "known keys include batch, subdivisions, width, height, learning_rate, burn_in, " \
           "max_batches, steps, scales"


# ---------------------------------------------------------------------------------------
# check_cfg


def check_cfg(cfg: Cfg, *, training: bool = True, dialect: Dialect = Dialect.PJREDDIE,
              strict_size: bool = False) -> list[Finding]:
    """Every rule the cfg breaks, each with its line and the fix.

    `dialect` decides what is fatal: pjreddie (Debian's darknet) aborts on section types it
    does not know and silently replaces unknown activations with ReLU; hank-ai refuses a
    width or height that is not a multiple of 32 (`strict_size` makes that an error too).
    """
    d = Dialect.of(dialect)
    out: list[Finding] = []
    _check_text(cfg, d, out)
    _check_structure(cfg, d, out)
    _check_duplicates(cfg, d, out)
    _check_values(cfg, out)
    if cfg.net is not None:
        _check_net(cfg, d, training, strict_size, out)
    _check_heads(cfg, d, training, out)
    _check_layers(cfg, d, out)
    return out


def _add(out: list[Finding], cfg: Cfg, line: int | None, reason: str, fix: str,
         severity: Severity = Severity.ERROR) -> None:
    out.append(Finding(cfg.path, line, reason, fix, severity))


def _check_text(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    lines = cfg.lines
    if lines and lines[0].startswith("\ufeff"):
        _add(out, cfg, 1, "the file starts with a byte-order mark (BOM): darknet reads "
             "'\\xef\\xbb\\xbf[net]' as a broken line, not as the [net] section",
             "save the file as UTF-8 without BOM")
    crlf = next((i + 1 for i, raw in enumerate(lines) if raw.endswith("\r\n")), None)
    if crlf and d is Dialect.PJREDDIE:
        _add(out, cfg, crlf, "Windows (CRLF) line endings: pjreddie's darknet keeps the "
             "'\\r', so '[net]\\r' is not [net] and it aborts with 'First section must be "
             "[net] or [network]'", "convert the file to LF line endings (dos2unix)")
    for line, text in cfg.malformed:
        if line == 1 and text.startswith("\ufeff"):
            continue
        _add(out, cfg, line, f"darknet cannot parse {text.strip()!r}: not key=value and "
             "not a [section]", "write it as key=value, or start it with # to comment it out")
    for line, text in cfg.stray:
        _add(out, cfg, line, f"{text.strip()!r} comes before the first [section]; darknet "
             "has no section to put it in and crashes", "move it into [net]")


def _check_structure(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    if not cfg.sections:
        _add(out, cfg, None, "the cfg has no sections ('Config file has no sections')",
             "start from an upstream cfg, e.g. yolov4-tiny-custom.cfg")
        return
    if cfg.net is None:
        first = cfg.sections[0]
        _add(out, cfg, first.line, f"the first section is {first.type}: darknet requires "
             "[net] or [network] first", "put the [net] section at the top of the file")
    if not cfg.output_layers():
        _add(out, cfg, None, "the cfg has no [yolo] or [region] layer, so it is not a "
             "detector: `detector train` has nothing to train",
             "start from a detector cfg (yolov3-tiny, yolov4-tiny-custom, yolov2-tiny-voc)")


def _check_net(cfg: Cfg, d: Dialect, training: bool, strict_size: bool,
               out: list[Finding]) -> None:
    for opt in cfg.net.options:
        if opt.key not in NET_KEYS:
            _add(out, cfg, opt.line, f"[net] key {opt.key!r} is not one darknet reads; it is "
                 "ignored" + (" (hank-ai refuses it)" if d is Dialect.HANKAI else ""),
                 _suggest(opt.key, NET_KEYS) + "; or delete the line",
                 Severity.ERROR if d is Dialect.HANKAI else Severity.WARNING)
        elif "#" in opt.value:
            _add(out, cfg, opt.line, f"{opt.key}={opt.value}: darknet removes spaces but not "
                 "inline comments, so the comment is part of the value",
                 "move the comment to a line of its own", Severity.WARNING)
    _check_size(cfg, d, strict_size, out)
    if training:
        _check_batch(cfg, out)
        _check_schedule(cfg, out)


def _check_values(cfg: Cfg, out: list[Finding]) -> None:
    """Every typed value darknet reads (the first of two equal keys): numbers where it
    reads numbers, within the range some real network uses (farm.darknet.cfg.values)."""
    for section in cfg.sections:
        name = "net" if section is cfg.net else section.name
        for opt in section.options:
            if section.option(opt.key) is not opt:
                continue
            found = _value_finding(cfg, section, name, opt.key, opt.value, opt.line)
            if found:
                out.append(found)


#: [net] keys that no rule of check_cfg reads but the one on their own value: a cfg that
#: passes with one value passes with any other value that passes `net_value_finding`.
#: A sweep checks each distinct value of these once, not each trial's whole cfg
#: (farm.sweeps.controller.plan). A rule that reads one of them with another key must
#: take it out of this set (tests/unit/test_cfg.py holds the set to that).
VALUE_ONLY = frozenset({"learning_rate", "momentum", "decay"})


def net_value_finding(cfg: Cfg, key: str, value: str) -> Finding | None:
    """What check_cfg would say of `key=value` in the [net] of `cfg` (None: nothing)."""
    net = cfg.net
    if net is None:
        return None
    return _value_finding(cfg, net, "net", key, value, net.line_of(key))


def _value_finding(cfg: Cfg, section: Section, name: str, key: str, value: str,
                   line: int) -> Finding | None:
    problem = value_problem(name, key, value)
    if not problem:
        return None
    return Finding(cfg.path, line, f"{key}={value} in {section.type} at line "
                   f"{section.line}: {problem}", value_hint(name, key), Severity.ERROR)


def _check_duplicates(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    """darknet's option_find() takes the first of two equal keys; hank-ai refuses them."""
    for section in cfg.sections:
        seen: dict[str, Option] = {}
        for opt in section.options:
            first = seen.setdefault(opt.key, opt)
            if first is not opt:
                _add(out, cfg, opt.line, f"{section.type} at line {section.line} sets "
                     f"{opt.key} twice (lines {first.line} and {opt.line}); darknet uses "
                     f"the first, {opt.key}={first.value}",
                     f"delete one of the two {opt.key} lines",
                     Severity.ERROR if d is Dialect.HANKAI else Severity.WARNING)


def _check_size(cfg: Cfg, d: Dialect, strict: bool, out: list[Finding]) -> None:
    for key in ("width", "height"):
        value = atoi(cfg.net_get(key))
        line = cfg.net.line_of(key)
        raw = cfg.net_get(key)
        if raw is not None and value_problem("net", key, raw):
            continue  # _check_values says what is wrong with it
        if not value or value <= 0:
            _add(out, cfg, line, f"[net] has no positive {key} ('No input parameters "
                 "supplied')", f"set {key}=416 (a multiple of 32)")
        elif value % 32:
            fatal = strict or d is Dialect.HANKAI
            refuses = " (hank-ai refuses it)" if d is Dialect.HANKAI else ""
            _add(out, cfg, line, f"{key}={value} is not a multiple of 32: the YOLO grid "
                 f"would not line up with the image{refuses}",
                 f"use {key}={round32(value)}", Severity.ERROR if fatal else Severity.WARNING)


def _check_batch(cfg: Cfg, out: list[Finding]) -> None:
    net = cfg.net
    batch, subdivisions = cfg.batch or 1, cfg.subdivisions or 1
    line = net.line_of("batch")
    if batch == 1 and subdivisions == 1:
        _add(out, cfg, line, "batch=1 subdivisions=1 is darknet's test-time setting: "
             "training on one image per step is noisy and AlexeyAB refuses it",
             "set batch=64 subdivisions=16 (the cfg's '# Training' values)")
    elif batch < 1 or subdivisions < 1 or batch % subdivisions:
        _add(out, cfg, line, f"batch={batch} is not a multiple of subdivisions="
             f"{subdivisions}: darknet trains batch/subdivisions images at a time and "
             "drops the rest (or none at all when subdivisions > batch)",
             "make batch a multiple of subdivisions, e.g. batch=64 subdivisions=16")


def _check_schedule(cfg: Cfg, out: list[Finding]) -> None:
    net = cfg.net
    max_batches = cfg.max_batches or 0
    if max_batches <= 0:
        _add(out, cfg, net.line_of("max_batches"), "[net] has no positive max_batches: "
             "training stops before the first iteration",
             "set max_batches=max(classes×2000, training images, 6000)")
    policy = net.get("policy", "constant")
    if policy not in POLICIES:
        _add(out, cfg, net.line_of("policy"), f"policy={policy} is unknown: darknet "
             "prints 'Couldn't find policy' and keeps the learning rate constant",
             "set policy=steps")
    if policy == "steps":
        _check_steps(cfg, max_batches, out)
    burn_in = cfg.burn_in or 0
    if max_batches > 0 and burn_in >= max_batches:
        _add(out, cfg, net.line_of("burn_in"), f"burn_in={burn_in} is not below max_batches="
             f"{max_batches}: the learning rate never reaches learning_rate",
             "lower burn_in (1000 is usual) or raise max_batches", Severity.WARNING)


def _check_steps(cfg: Cfg, max_batches: int, out: list[Finding]) -> None:
    net = cfg.net
    steps, scales = net.get("steps"), net.get("scales")
    line = net.line_of("steps")
    if steps is None or scales is None:
        _add(out, cfg, line, "policy=steps needs both steps= and scales= ('STEPS policy "
             "must have steps and scales in cfg file')",
             "add steps=<80% of max_batches>,<90% of max_batches> and scales=.1,.1")
        return
    s_list, c_list = cfg.steps, cfg.scales
    if len(s_list) != len(c_list):
        _add(out, cfg, net.line_of("scales"), f"{len(s_list)} steps but {len(c_list)} "
             "scales: darknet reads one scale per step and runs past the end of the list",
             "give exactly one scale per step, e.g. steps=4800,5400 scales=.1,.1")
    if any(b < a for a, b in zip(s_list, s_list[1:])):
        _add(out, cfg, line, f"steps={steps} are not in ascending order: darknet applies "
             "each scale only after the previous step was passed",
             "list steps in ascending order")
    late = [s for s in s_list if max_batches > 0 and s >= max_batches]
    if late:
        _add(out, cfg, line, f"steps {', '.join(map(str, late))} are not below max_batches="
             f"{max_batches}: those learning-rate drops never happen",
             f"use steps={int(max_batches * .8)},{int(max_batches * .9)} (80% and 90%)")


def _check_heads(cfg: Cfg, d: Dialect, training: bool, out: list[Finding]) -> None:
    heads = cfg.output_layers()
    if not heads:
        return
    final = head_classes(heads[-1])
    for head in heads:
        _check_head_filters(cfg, head, out)
        _check_head_anchors(cfg, head, out)
        if head_classes(head) != final:
            _add(out, cfg, head.line_of("classes"), f"{head.type} at line {head.line} has "
                 f"classes={head_classes(head)} but the last detection layer has "
                 f"classes={final}: every head must detect the same classes",
                 f"set classes={final} in every [yolo]/[region] (and their filters)")
    last = heads[-1]
    if training and d is Dialect.PJREDDIE and atoi(last.get("random", "0")):
        _add(out, cfg, last.line_of("random"), "random=1: pjreddie's darknet ignores "
             "width/height then and trains at a random 320..608 px, and at 608×608 for the "
             "last 200 iterations", "set random=0 to train at the cfg's width×height",
             Severity.WARNING)


def _check_head_filters(cfg: Cfg, head: Section, out: list[Finding]) -> None:
    conv = cfg.conv_before(head)
    need = head_filters(head)
    if conv is None:
        prev = cfg.sections[head.index - 1] if head.index > 0 else None
        _add(out, cfg, head.line, f"{head.type} at line {head.line} is not fed by a "
             f"[convolutional] (it follows {prev.type if prev else 'nothing'}), so its "
             "filters cannot be checked", f"put a [convolutional] with filters={need} "
             f"and activation=linear right before it", Severity.WARNING)
        return
    have = atoi(conv.get("filters", "1"))
    if have != need:
        _add(out, cfg, conv.line_of("filters"), f"filters={have} in the [convolutional] "
             f"before {head.type} at line {head.line} should be {need} = "
             f"{filters_formula(head)}; darknet aborts ('l.outputs == params.inputs')",
             f"set filters={need} at line {conv.line_of('filters')}")


def _check_head_anchors(cfg: Cfg, head: Section, out: list[Finding]) -> None:
    num = head_num(head)
    anchors = float_list(head.get("anchors"))
    if head.get("anchors") is not None and len(anchors) < 2 * num:
        _add(out, cfg, head.line_of("anchors"), f"{len(anchors)} anchor values for num="
             f"{num}: darknet reads {2 * num} (a width and a height per anchor) and the "
             "missing ones are 0", f"give {2 * num} values or set num={len(anchors) // 2}")
    masks = head_masks(head) or []
    bad = [m for m in masks if m < 0 or m >= num]
    if bad:
        _add(out, cfg, head.line_of("mask"), f"mask values {bad} are not anchors 0..{num - 1} "
             f"(num={num}): darknet reads past the anchor list",
             f"use mask indices below num={num}")


def _check_layers(cfg: Cfg, d: Dialect, out: list[Finding]) -> None:
    known = PJREDDIE_SECTIONS if d is Dialect.PJREDDIE else ALEXEYAB_SECTIONS
    activations = PJREDDIE_ACTIVATIONS if d is Dialect.PJREDDIE else ALEXEYAB_ACTIVATIONS
    who = d.who
    bad_activations: dict[str, list[int]] = {}
    grouped_routes: list[int] = []
    for s in cfg.layers:
        if s.name not in known:
            _add(out, cfg, s.line, _unknown_section_reason(s, who, d),
                 _unknown_section_fix(s, d))
            continue
        act = s.get("activation")
        if act is not None and act not in activations:
            bad_activations.setdefault(act, []).append(s.line_of("activation"))
        if d is Dialect.PJREDDIE and s.name == "route" and s.option("groups") is not None:
            grouped_routes.append(s.line_of("groups"))
        _check_references(cfg, s, out)
    for act, lines in bad_activations.items():
        _add(out, cfg, lines[0], f"activation={act} ({_lines_text(lines)}) is unknown to "
             f"{who}: it prints 'Couldn't find activation function' and trains with ReLU, "
             "a different network from the one the cfg describes",
             "train this cfg with AlexeyAB's darknet (it knows mish and swish), or use "
             "activation=leaky" if d is Dialect.PJREDDIE else "use activation=leaky")
    if grouped_routes:
        _add(out, cfg, grouped_routes[0], f"[route] groups=/group_id= "
             f"({_lines_text(grouped_routes)}) are ignored by pjreddie's darknet ('Unused "
             "field'): the route passes all its channels, so the layers after it get other "
             "shapes than in AlexeyAB's yolov4-tiny and its pretrained weights do not fit",
             "train yolov4 cfgs with AlexeyAB's darknet, or start from yolov3-tiny with "
             "pjreddie")


def _check_references(cfg: Cfg, s: Section, out: list[Finding]) -> None:
    """[route] layers= and [shortcut] from= must name layers before this one."""
    key = {"route": "layers", "shortcut": "from"}.get(s.name)
    if key is None:
        return
    index = s.index - (1 if cfg.net is not None else 0)
    refs = int_list(s.get(key))
    bad = [r for r in refs if not 0 <= (r + index if r < 0 else r) < index]
    if not refs or bad:
        what = f"{key}={s.get(key)} names no earlier layer" if refs else f"no {key}= given"
        _add(out, cfg, s.line_of(key), f"{s.type} at line {s.line} (layer {index}): {what}; "
             "darknet reads memory that is not a layer and crashes",
             f"refer to layers 0..{index - 1}, or -1..-{index} counted back from this one")


def _lines_text(lines: list[int]) -> str:
    if len(lines) == 1:
        return f"line {lines[0]}"
    shown = ", ".join(map(str, lines[:5])) + (", …" if len(lines) > 5 else "")
    return f"{len(lines)} layers, lines {shown}"


def _unknown_section_reason(s: Section, who: str, d: Dialect) -> str:
    if d is Dialect.PJREDDIE and s.name in ALEXEYAB_SECTIONS:
        return (f"{s.type} is an AlexeyAB layer that {who} does not know: it prints 'Type "
                "not recognized' and builds an empty layer, then aborts ('Layer before "
                "convolutional layer must output image') or segfaults at the first "
                "iteration")
    lower = {t.lower(): t for t in ALEXEYAB_SECTIONS | PJREDDIE_SECTIONS}
    near = lower.get(s.name.lower())
    if near:
        return f"{s.type} is not a layer type: darknet compares section names exactly " \
               f"(case matters), so it is not [{near}] ('Type not recognized')"
    return f"{s.type} is not a layer type {who} knows ('Type not recognized'); the " \
           "network breaks at this layer"


def _unknown_section_fix(s: Section, d: Dialect) -> str:
    lower = {t.lower(): t for t in ALEXEYAB_SECTIONS | PJREDDIE_SECTIONS}
    near = lower.get(s.name.lower())
    if near and near != s.name:
        return f"write [{near}]"
    if d is Dialect.PJREDDIE and s.name in ALEXEYAB_SECTIONS:
        return "train this cfg with AlexeyAB's darknet, or start from a cfg pjreddie " \
               "knows (yolov3-tiny, yolov2-tiny-voc)"
    close = difflib.get_close_matches(s.name, sorted(ALEXEYAB_SECTIONS), n=1)
    return f"write [{close[0]}]" if close else "remove the section"
