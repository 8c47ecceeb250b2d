# ACMR zero-shot studio: the Gradio app on the shipped default model.
#   docker build -t acmr-studio .
#   docker run --rm -p 7860:7860 acmr-studio              # CPU host
#   docker run --rm --gpus all -p 7860:7860 acmr-studio   # GPU host (PyTorch's CUDA wheels bring their runtime)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/acmr/.cache/huggingface \
    ACMR_USER_CLASSES_DIR=/home/acmr/.local/share/acmr/user_classes \
    NUMBA_CACHE_DIR=/tmp/numba-cache

RUN useradd --create-home --uid 1000 acmr

WORKDIR /opt/acmr

# Dependencies first, so code changes do not reinstall torch.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml README.md ./
COPY acmr_core ./acmr_core
COPY app ./app
COPY assets ./assets
COPY checkpoints ./checkpoints
RUN pip install --no-cache-dir --no-deps .

USER 1000:1000

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]

# Inside the container the app must listen on all interfaces; outside it, `acmr serve` binds 127.0.0.1.
CMD ["acmr", "serve", "--host", "0.0.0.0", "--port", "7860"]
