"""What darknet knows, dialect by dialect: the section types and activations its parser
accepts, and which dialect a cfg belongs to when it uses what only one of them reads."""
from __future__ import annotations

from farm.darknet.cfg.model import Cfg
from farm.darknet.dialect import Dialect

#: Section types each dialect's parser accepts (string_to_layer_type: exact, case-sensitive).
#: pjreddie's list was read from Debian's /usr/bin/darknet; AlexeyAB's from src/parser.c.
PJREDDIE_SECTIONS = frozenset(
    "net network convolutional conv deconvolutional deconv local activation logistic "
    "l2norm crnn gru lstm rnn connected conn maxpool max reorg avgpool avg dropout lrn "
    "normalization batchnorm softmax soft route upsample shortcut crop cost detection "
    "region yolo iseg".split())
ALEXEYAB_SECTIONS = frozenset(
    "net network convolutional conv local activation crnn gru lstm conv_lstm history rnn "
    "connected conn maxpool max local_avgpool local_avg reorg3d reorg avgpool avg dropout "
    "lrn normalization batchnorm softmax soft contrastive route upsample shortcut "
    "scale_channels sam crop cost detection region yolo Gaussian_yolo empty silence "
    "implicit".split())

PJREDDIE_ACTIVATIONS = frozenset(
    "logistic loggy relu elu selu relie plse hardtan lhtan linear ramp leaky tanh "
    "stair".split())
ALEXEYAB_ACTIVATIONS = PJREDDIE_ACTIVATIONS | frozenset(
    "swish mish hard_mish normalize_channels normalize_channels_softmax "
    "normalize_channels_softmax_maxval relu6 gelu revleaky".split())



def cfg_dialect(cfg: Cfg) -> Dialect | None:
    """AlexeyAB's when the cfg uses what only AlexeyAB's (and hank-ai's) darknet reads:
    [route] groups=, their layer types, their activations. Such a cfg, and weights made
    with it, belong to that dialect whatever darknet is installed where it is checked.
    None when every dialect reads it alike."""
    for s in cfg.layers:
        if s.name == "route" and s.option("groups") is not None:
            return Dialect.ALEXEYAB
        if s.name not in PJREDDIE_SECTIONS and s.name in ALEXEYAB_SECTIONS:
            return Dialect.ALEXEYAB
        act = s.get("activation")
        if act is not None and act not in PJREDDIE_ACTIVATIONS and act in ALEXEYAB_ACTIVATIONS:
            return Dialect.ALEXEYAB
    return None
