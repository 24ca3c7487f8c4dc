"""LivePortrait's face-vid2vid networks (F, M, W), written to load the released checkpoints.

Only what the motion position maps need: the appearance feature extractor, the motion
extractor (ConvNeXt-V2-tiny, 21 keypoints, 66 pose bins) and the warping module with its
dense motion network. The SPADE decoder and the stitching networks are not included.
"""
from .appearance_feature_extractor import AppearanceFeatureExtractor
from .keypoints import bins_to_degrees, rotation_matrix, transform_keypoints
from .loader import (
    FILES,
    SETTING,
    IncompatibleWeights,
    LivePortraitModels,
    build_modules,
    load_liveportrait,
    random_liveportrait,
)
from .motion_extractor import MotionExtractor
from .motion_map import LivePortraitMotion, face_crop_matrix, field_to_maps
from .warping_module import DenseMotionNetwork, WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor", "MotionExtractor", "WarpingNetwork", "DenseMotionNetwork",
    "bins_to_degrees", "rotation_matrix", "transform_keypoints",
    "FILES", "SETTING", "IncompatibleWeights", "LivePortraitModels", "build_modules",
    "load_liveportrait", "random_liveportrait",
    "LivePortraitMotion", "face_crop_matrix", "field_to_maps",
]
