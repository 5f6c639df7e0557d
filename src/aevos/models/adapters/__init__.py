"""Built-in model flavors, one module each, imported only when a flavor is first loaded.

=============  ===========================================================  ================
flavor         artifact                                                     needs
=============  ===========================================================  ================
``sklearn``    a scikit-learn estimator as skops bytes (pickle only trusted)  scikit-learn, skops
``rules``      a decision table as UTF-8 JSON or YAML                        (nothing)
``ocr``        a JSON/YAML engine config (may be empty)                      rapidocr-onnxruntime
                                                                             or tesseract-ocr
``embedding``  a JSON descriptor of a packaged sentence-transformers model   the ``embedding``
                                                                             extra (torch)
``openai``     a JSON/YAML prompt definition (may be empty)                  httpx
``oip``        a JSON/YAML document: where the model is served (V2 REST)     httpx
``composite``  a JSON manifest naming parts of the above by sha256            its parts' needs
=============  ===========================================================  ================

Each module calls :func:`aevos.models.flavors.register_flavor` at import, and keeps its
third-party imports inside itself, so importing :mod:`aevos` never pulls a model library.
"""
