"""Fair Diagnosis (causal adversarial masks): the Grad-CAM explanations and the validation of its
claims; the method is :mod:`medequity.methods.fair_diagnosis` (FAAP: :mod:`medequity.methods.faap`)."""
