"""FairDi (Masroor et al.): the Table 3 ablation and the validation of its claims; the method is
:mod:`medequity.methods.fairdi`."""
