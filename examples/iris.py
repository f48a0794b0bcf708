"""The iris example of BlazeRPC's docs, batched: concurrent requests share one model call.

blaze serve examples.iris:app
"""

import numpy as np

from blazerpc import BlazeApp, TensorInput, TensorOutput

app = BlazeApp(enable_batching=True, max_batch_size=32, batch_timeout_ms=10.0)

# A fixed linear classifier standing in for a trained model (4 features -> 3 classes).
WEIGHTS = np.array([[0.4, -0.2, -0.3], [1.2, -0.5, -0.9], [-2.1, 0.3, 1.8], [-1.0, -0.6, 1.9]], dtype=np.float32)
calls = 0


@app.model("iris", version="1")
def predict(features: TensorInput[np.float32, "batch", 4]) -> TensorOutput[np.float32, "batch", 3]:
    """Class probabilities for each row of features."""
    global calls
    calls += 1
    logits = features.astype(np.float64) @ WEIGHTS  # float32 overflows for features near its range
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
