"""Models: video ViT (v1 joint, v2 divided), text encoders, sort head, losses, FLOPs, parameter groups."""
from tvts.models.flops import FlopReport, flops
from tvts.models.model import TVTSModel, TVTSOutput, build_model, build_video_encoder
from tvts.models.param_groups import param_groups
from tvts.models.video import VideoEncoder

__all__ = ["FlopReport", "flops", "TVTSModel", "TVTSOutput", "build_model", "build_video_encoder",
           "param_groups", "VideoEncoder"]
