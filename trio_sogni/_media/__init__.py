"""The client's media-project leaves, under the ``sogni.projects`` facade: the model catalog
and option checks (`_models`), the ``jobRequest`` builder (`_request`), media inputs and their
uploads (`_inputs`) and results with their downloads (`_results`).

A facade-level package: it uses `trio_sogni._transport` (`RestClient`), `trio_sogni._errors`
and `trio_sogni.protocol`, never the job router, the driver, the chat facades or the client
(tests/test_layering.py checks it).
"""
