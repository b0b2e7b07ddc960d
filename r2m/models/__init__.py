"""Models: builders, the vanilla reward model, the policy-feedback cross-attention and the R2M reward head."""

from r2m.models.feedback import PolicyFeedbackAttention, blend, gaussian_like

__all__ = ["PolicyFeedbackAttention", "blend", "gaussian_like"]
