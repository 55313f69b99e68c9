"""The policy side of the method: the Policy contract and the built-in TCP-like BEV hybrid policy."""

from takeover.policy.checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from takeover.policy.config import PolicyConfig, load_policy_config
from takeover.policy.distributions import PlanDistribution, PolicyActions
from takeover.policy.features import FeatureBuilder, PolicyFeatures, collate_features
from takeover.policy.hybrid import HybridPolicy
from takeover.policy.protocol import Policy, PolicyPlan

__all__ = [
    "CheckpointError",
    "FeatureBuilder",
    "HybridPolicy",
    "PlanDistribution",
    "Policy",
    "PolicyActions",
    "PolicyConfig",
    "PolicyFeatures",
    "PolicyPlan",
    "collate_features",
    "file_sha256",
    "load_checkpoint",
    "load_policy_config",
    "save_checkpoint",
]
