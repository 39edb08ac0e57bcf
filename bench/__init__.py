"""``emotion-stream bench``: figures, never pass/fail; one module per measured path, side by side.

(a) ``original``:   Haar + VGG19 224 RGB, one predict per face (the solution we replaced)
    ``detectors``:  every detector at a few sizes on the same photos and frame
    ``classifier``: the classifier alone, CPU ms a face at batch 1/16/64, beside other models
(b) ``direct``:     our FaceAnalyzer on the files, batched, one process
(c) ``batch_mode``: batch mode through an embedded Redis with N in-process workers
(d) ``live``:       K synthetic cameras through ingest -> Redis -> workers (one Redis or a cluster)
(e) ``tracking``:   a clip of people through the whole pipeline, scored against who was planted

``config`` holds what they share; ``report`` prints them; ``device_check`` checks an accelerator.
"""
