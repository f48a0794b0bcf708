# blazerpc's image: the README's set-up (`make setup`: .venv with the pinned versions of
# constraints.txt, the default model's weights, the LLM engine's native CPU kernels), then
# `blaze` as the entry point. deploy/kubernetes/ runs it; see docs/scaling.md.
#   docker build -t blazerpc:0.1.0 .
#   docker run -p 8000:8000 -p 50051:50051 blazerpc:0.1.0 serve examples.echo:app
FROM python:3.11-slim

# make runs the set-up; g++ builds the native kernels (without it the engine uses torch's ops).
RUN apt-get update \
    && apt-get install -y --no-install-recommends make g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .
# The kernels' build cache goes in the image, where the unprivileged user below can read it:
# builds for the build machine's CPU class and, where it has AVX-512, for AVX2 too (make setup).
# They load as they are; on a CPU of another class the engine builds its own in a per-user
# temporary folder at its first start (llm/kernels.py).
ENV TORCH_EXTENSIONS_DIR=/app/.torch_extensions
RUN make setup

RUN useradd --uid 10001 --create-home blaze
USER 10001
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 8000 50051
ENTRYPOINT ["blaze"]
CMD ["serve", "examples.echo:app"]
