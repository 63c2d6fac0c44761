"""Real-dataset loaders, one module per dataset; importing this package registers them all."""

from medequity.data.loaders import (  # noqa: F401  (imported for their @register_dataset side effect)
    brset,
    candi,
    chexpert,
    fitzpatrick17k,
    ham10000,
    harvard_npz,
    ircadb,
    kits23,
    mimic_cxr,
    montgomery,
    nih_cxr14,
    papila,
    spider,
    tusc,
)
