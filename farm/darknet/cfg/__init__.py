"""darknet cfg files, room by room: the file model (`model`), what each dialect knows
(`known`), the values keys hold (`values`), the rules (`check`), generation from an
upstream cfg (`make`) and anchors from a dataset's boxes (`anchors`)."""
from farm.darknet.cfg.check import (VALUE_ONLY, check_cfg, net_value_finding,
                                    validate_net_overrides)
from farm.darknet.cfg.known import cfg_dialect
from farm.darknet.cfg.make import default_max_batches, make_cfg
from farm.darknet.cfg.model import Cfg, Option, Section, head_filters
from farm.darknet.cfg.values import NET_KEYS, atof, atoi

__all__ = ["Cfg", "Option", "Section", "NET_KEYS", "VALUE_ONLY", "atof", "atoi",
           "calc_anchors", "cfg_dialect", "check_cfg", "default_max_batches", "head_filters",
           "make_cfg", "net_value_finding", "validate_net_overrides"]


def __getattr__(name: str):
    """`calc_anchors` is loaded when asked for: it needs numpy, which reading and checking
    a cfg (every `farm` command that touches a sweep) does not."""
    if name == "calc_anchors":
        from farm.darknet.cfg.anchors import calc_anchors
        return calc_anchors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
