"""The bottom layer: plain data, the error tree and pure rules (messages and requests, knobs,
routes, context fitting, structured output, test-time plans). Imports nothing else of ours."""
