"""meshrec-detect's registrations (cheap: nothing is imported until a detector is used)."""

import meshrec


@meshrec.hookimpl
def meshrec_register_detectors(registry):
    registry.add("hog", "meshrec_detect.hog:HOGPersonDetector", kind="person",
                 summary="OpenCV's HOG + linear SVM people detector (weights built into OpenCV), several people")
    registry.add("blazepose", "meshrec_detect.blazepose:BlazePoseDetector", kind="keypoints",
                 summary="MediaPipe BlazePose (33 landmarks -> coco17), several people (found one by one); needs mediapipe")
