"""DINOv2-style distillation losses, one small module each."""

from edgepath.distill.losses.align import FeatureAlignLoss
from edgepath.distill.losses.dino_cls import DINOLoss
from edgepath.distill.losses.ibot_patch import IBOTPatchLoss
from edgepath.distill.losses.koleo import KoLeoLoss

__all__ = ["DINOLoss", "FeatureAlignLoss", "IBOTPatchLoss", "KoLeoLoss"]
