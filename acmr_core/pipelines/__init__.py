"""End-to-end pipelines that compose the layers below: build a bundle, build the demo, evaluate, predict,
bootstrap from downloaded data."""
