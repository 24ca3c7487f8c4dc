"""Face geometry shared by curation, features and the development-set maker: named landmark
index sets of the 478-point mediapipe FaceMesh (refine_landmarks=True), the affine of a square
crop around a point, and the one warp that resamples such a crop.

Conventions: "right" and "left" are the subject's (a frontal face shows its right eye on the
image's left). Coordinates are continuous: pixel i covers [i, i+1), as mediapipe's normalised
landmarks times the frame size are; ``cv2_affine`` converts an affine to OpenCV's convention
(pixel centres at integers). Nothing here loads a model.

Why one module: the scorers (stages/quality.py), the face checks (stages/faces.py), the position
maps (stages/position_maps.py, stages/mesh_raster.py) and the development set's occluders
(pipeline/evaluation/devset.py) must agree on which points are the mouth, the eyes and the
cheeks; copies drifted apart before (see ``CHEEKS``).
"""
from __future__ import annotations

import cv2
import numpy as np

N_LANDMARKS = 478  # 468 mesh vertices + 10 iris points (refined model)

# ---------------------------------------------------------------------------- single points
NOSE_TIP = 1  # the point nearest the camera in a frontal view: root of mesh-hop depth, yaw cue
NOSE_BRIDGE = 6  # between the eyes: the top of the mouth-and-nose occluder
TOP = 10  # top of the face oval (hairline at the forehead's centre): face height with CHIN
CHIN = 152  # bottom of the face oval: face height, the bottom of the mouth-and-nose occluder
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263  # outer eye corners: eye axis (roll), inter-ocular scale
CONTOUR_RIGHT, CONTOUR_LEFT = 234, 454  # face contour at cheekbone height: nose-to-side distances give yaw
LIP_INNER_TOP, LIP_INNER_BOTTOM = 13, 14  # inner lip midpoints: their gap is the mouth opening

# ---------------------------------------------------------------------------- contours
# The outer lip contour, a closed polygon: the mouth's extent (occlusion, occluder placement).
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
# The inner lip contour, a closed polygon: the mouth opening (teeth and tongue are not occluders).
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
# Inner lip contour, upper and lower halves, corner to corner: the mouth line lies between them.
INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# Eye corners (outer, inner) of the right then the left eye: each eye's visible-region ellipse.
EYE_CORNERS = [(EYE_OUTER_RIGHT, 133), (EYE_OUTER_LEFT, 362)]
# The full eyelid contours (16 points each), right eye first: where an occluder over the eyes goes
# (EYES[:16] and EYES[16:] are the two eyes: their centres give the roll and the eye distance).
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
EYES = RIGHT_EYE + LEFT_EYE
# Upper brow points of both eyebrows: an occluder over the eyes covers the brows too.
BROWS = [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]
# The face oval, a closed polygon from the top clockwise: the face region (skin shares, the human
# check's person probability, hands that come from outside the face).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]

# ---------------------------------------------------------------------------- skin regions
# Cheek points well away from mouth, eyes, hair and beard line: the face's own skin colour.
#
# Decision (the two copies disagreed): the development-set maker sampled only the first six of
# these (50, 280, 205, 425, 118, 347), the scorer all eight. The eight are right: 101 and 330 sit
# on the same bare upper cheek beside the nose, inside the six's area, so they add samples to a
# median without adding risk (nothing an occluder covers, no hair or beard). The devset keeps
# the six as ``CHEEKS_DEVSET`` because its skin-coloured occluders (fills 'skin' and 'hand')
# must be painted exactly as before: a development set made now must equal one made earlier,
# byte for byte, so filter measurements stay comparable; its colour only needs to be plausible.
CHEEKS = [50, 280, 205, 425, 118, 347, 101, 330]
CHEEKS_DEVSET = CHEEKS[:6]
# Skin around the mouth and eyes that must stay visible, and where the face's own skin colour is
# read from (far from each region, so an occluder over one does not bias its reference).
FOREHEAD = [151, 9, 108, 337, 69, 299, 10, 109, 338]  # skin reference for the nose
FOREHEAD_TOP = [10, 151, 109, 338]  # skin reference for the bridge (away from sunglasses)
BRIDGE = [168, 6, 197, 122, 351]  # between the eyes: covered by sunglasses, eye patches
UPPER_CHEEKS = [118, 347, 116, 345, 117, 346]  # skin reference for the nose (with FOREHEAD)
LOWER_CHEEKS = [205, 425, 187, 411, 207, 427]  # skin reference for the bridge (with FOREHEAD_TOP)
NOSE = [1, 4, 5, 195, 197, 45, 275, 44, 274]  # nose tip and ridge: covered by masks, hands


# ---------------------------------------------------------------------------- crop transform

def crop_affine(centre, side: float, size: int) -> np.ndarray:
    """2x3 affine frame -> crop (continuous coordinates) of the square of ``side`` frame pixels
    centred on ``centre`` (x, y), resampled to ``size`` x ``size``: scale ``size / side``.
    Frame points map to crop points as ``p * m[0, 0] + m[:, 2]``, and back as
    ``(q - m[:, 2]) / m[0, 0]``."""
    s = size / side
    return np.array([[s, 0, size / 2 - s * centre[0]], [0, s, size / 2 - s * centre[1]]], dtype=np.float64)


def cv2_affine(m: np.ndarray) -> np.ndarray:
    """An affine in continuous pixel coordinates (pixel i covers [i, i+1)) as OpenCV expects it
    (pixel centres at integers): shift by half a pixel on both sides."""
    m = np.asarray(m, dtype=np.float64)
    out = m.copy()
    out[:, 2] = m[:, 2] + 0.5 * (m[:, 0] + m[:, 1]) - 0.5
    return out


def warp_square(rgb: np.ndarray, m: np.ndarray, centre, side: float, size: int,
                border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The square ``size`` crop of ``rgb`` under the frame -> crop affine ``m`` (scale m[0, 0];
    from ``crop_affine``), resampling only the region of ``side`` around ``centre`` (not the
    whole frame). ``border``: replicated (the default) so faces at the frame edge keep context,
    or constant black where replicated pixels would mislead a model."""
    s = m[0, 0]
    cx, cy = centre
    h, w = rgb.shape[:2]
    x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x1, y1 = min(w, int(np.ceil(cx + side / 2))), min(h, int(np.ceil(cy + side / 2)))
    src, fx, fy = rgb[y0:y1, x0:x1], 1.0, 1.0
    if s < 0.5 and src.size:
        # warpAffine cannot area-average: shrink first (INTER_AREA), then warp near 1:1.
        rw, rh = src.shape[1], src.shape[0]
        src = cv2.resize(src, (max(1, round(rw * s)), max(1, round(rh * s))), interpolation=cv2.INTER_AREA)
        fx, fy = src.shape[1] / rw, src.shape[0] / rh
    if not src.size:
        return np.zeros((size, size, 3), np.uint8)
    # Continuous coordinates: region pixel q = (p - (x0, y0)) * f, so p = q / f + (x0, y0).
    warp = np.array([[s / fx, 0, m[0, 2] + s * x0], [0, s / fy, m[1, 2] + s * y0]], dtype=np.float64)
    return cv2.warpAffine(np.ascontiguousarray(src), cv2_affine(warp), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=border)
