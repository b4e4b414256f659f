"""The kserve Model a slot serves: one MLflow pyfunc bundle under the deployment's name,
answering OIP v2 infer requests (one BYTES input per template variable, one ``output``)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bgserve.slot.oip import OUTPUT_NAME, input_columns, output_strings

if TYPE_CHECKING:
    import pandas as pd
    from kserve.protocol.infer_type import InferRequest, InferResponse

log = logging.getLogger("bgserve.slot")


def bundle_model_class() -> type[Any]:
    """Build the kserve Model subclass lazily: importing kserve is slow and parses argv."""
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferResponse

    from bgserve.slot.openai_api import chat_bundle

    class BundleModel(kserve.Model):
        """One MLflow pyfunc bundle served under the deployment's name."""

        def __init__(self, name: str, model_uri: str) -> None:
            super().__init__(name)
            self.model_uri = model_uri
            self.variables: list[str] = []
            self._pyfunc: Any = None
            self.chat_bundle: Any = None

        def load(self) -> bool:
            import mlflow.pyfunc

            self._pyfunc = mlflow.pyfunc.load_model(self.model_uri)
            schema = self._pyfunc.metadata.get_input_schema()
            if schema is not None and schema.has_input_names():
                self.variables = list(schema.input_names())
            self.chat_bundle = chat_bundle(self._pyfunc)
            self.ready = True
            return True

        async def predict(
            self,
            payload: InferRequest,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> InferResponse:
            import pandas as pd

            frame = pd.DataFrame(input_columns(payload.inputs, self.variables))
            # A bundle may call a remote model: keep the event loop free for probes.
            outputs = await asyncio.to_thread(self._predict, frame)
            if len(outputs) != len(frame):
                raise kserve.errors.InferenceError(
                    f"the model returned {len(outputs)} outputs for {len(frame)} rows"
                )
            out = InferOutput(OUTPUT_NAME, [len(outputs)], "BYTES", outputs)
            return InferResponse(payload.id or "", self.name, [out])

        def _predict(self, frame: pd.DataFrame) -> list[str]:
            from mlflow.exceptions import MlflowException

            try:
                return output_strings(self._pyfunc.predict(frame))
            except MlflowException as exc:
                if exc.error_code == "INVALID_PARAMETER_VALUE":
                    raise InvalidInput(exc.message) from exc
                raise _failed(exc) from exc
            except Exception as exc:
                # Left to kserve's catch-all handler, the error would be answered and then
                # re-raised to uvicorn, which closes the connection after the 500: a router
                # reusing it in that instant gets no answer at all.
                raise _failed(exc) from exc

    def _failed(exc: Exception) -> Exception:
        log.warning("the model failed: %s: %s", type(exc).__name__, exc)
        failure: Exception = kserve.errors.InferenceError(f"{type(exc).__name__} : {exc}")
        return failure

    return BundleModel
