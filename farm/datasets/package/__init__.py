"""Package labelled folders into one immutable, content-addressed dataset.

Why: the seed's datasets were folders edited by hand (ds2's valid.txt held a .txt path,
ds4's a blank line) and copied between machines with scp. A packaged dataset is written
once: images, labels, obj.names, obj.data (absolute paths), train.txt, valid.txt and a
manifest (sha256 of every file, counts per class, object sizes at the network size).

Layout: `data/s<k>/<path in source k>` holds each image with its `.txt` beside it. That
is where AlexeyAB and hank-ai look, and pjreddie too as long as no folder on the path is
named images/JPEGImages/raw (it swaps the first "images" for "labels"; lint checks it).
Its id is the sha256 of its content and parameters, so the same inputs give the same
folder. It is built in a temporary folder beside the final one and renamed only when
complete and linted; any error removes the temporary folder.

Streaming: one image is in memory at a time, files are hashed in chunks, lists and the
file index go straight to disk; memory does not grow with the number of images.

Building is in build.py; export, extraction, verification and relocation in archive.py.
"""
from farm.datasets.package.archive import (export_dataset, extract_dataset, relocate,
                                           verify_dataset)
from farm.datasets.package.build import (FORMAT, KINDS, MANIFEST, SIZE_EDGES, SMALL_PX,
                                         PackageResult, count_images, package)

__all__ = ["FORMAT", "KINDS", "MANIFEST", "SIZE_EDGES", "SMALL_PX", "PackageResult",
           "count_images", "export_dataset", "extract_dataset", "package", "relocate",
           "verify_dataset"]
