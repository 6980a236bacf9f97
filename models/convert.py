"""Reproduce the ONNX face models in this folder from the mediapipe 0.10.21 wheel.

The three MediaPipe models use a small set of TFLite operators (CONV_2D,
DEPTHWISE_CONV_2D, PRELU, ADD, MAX_POOL_2D, PAD, RESHAPE, CONCATENATION, RELU
and DEQUANTIZE of fp16 weights). tflite2onnx 0.4.1, the only converter that
needs no TensorFlow, is unmaintained and crashes on ``face_landmark.tflite``,
so this script translates those operators directly: fp16 constants are folded
to fp32, activations are kept in NCHW inside the graph, and inputs and outputs
keep the TFLite names, shapes (NHWC) and meaning.

Usage::

    pip download mediapipe==0.10.21 --no-deps --only-binary=:all: -d /tmp/mp
    python models/convert.py /tmp/mp/mediapipe-0.10.21-*.whl

It writes ``face_detection_short_range.onnx``, ``face_landmark.onnx`` and
``iris_landmark.onnx`` beside itself and prints their sha256 sums.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.AddOptions import AddOptions
from tflite.BuiltinOperator import BuiltinOperator
from tflite.ConcatenationOptions import ConcatenationOptions
from tflite.Conv2DOptions import Conv2DOptions
from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions
from tflite.Pool2DOptions import Pool2DOptions

MODELS = {
    "face_detection_short_range": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "iris_landmark": "mediapipe/modules/iris_landmark/iris_landmark.tflite",
}
OP_NAMES = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]
ACTIVATIONS = {0: None, 1: "Relu", 3: "Relu6"}


class Converter:
    """Translate one TFLite subgraph into an ONNX graph."""

    def __init__(self, data: bytes) -> None:
        self.model = tflite.Model.GetRootAsModel(data, 0)
        self.graph = self.model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.consts: dict[int, np.ndarray] = {}
        self.names: dict[int, str] = {}
        self.nchw: set[int] = set()  # tensors whose ONNX value is NCHW
        self.counter = 0
        self.outputs = {int(i) for i in self.graph.OutputsAsNumpy()}

    # -- tensors ---------------------------------------------------------
    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.graph.Tensors(index).ShapeAsNumpy()]

    def const(self, index: int) -> np.ndarray | None:
        """Return the constant value of a tensor (fp16 folded to fp32), or None."""
        if index in self.consts:
            return self.consts[index]
        tensor = self.graph.Tensors(index)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        dtype = TFLITE_DTYPES[tensor.Type()]
        value = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype)
        value = value.reshape(self.shape(index)) if self.shape(index) else value
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        self.consts[index] = value
        return value

    def unique(self, base: str) -> str:
        self.counter += 1
        return f"{base}__{self.counter}"

    def add_const(self, base: str, value: np.ndarray) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def name(self, index: int) -> str:
        """ONNX value name of a tensor, materialising constants on demand."""
        if index not in self.names:
            value = self.const(index)
            if value is None:
                raise KeyError(f"tensor {index} used before it is produced")
            if value.ndim == 4:  # a 4D constant operand is laid out NCHW like activations
                value = value.transpose(NHWC_TO_NCHW)
                self.nchw.add(index)
            self.names[index] = self.add_const(self.tensor_name(index), value)
        return self.names[index]

    def tensor_name(self, index: int) -> str:
        return self.graph.Tensors(index).Name().decode()

    def as_nhwc(self, index: int) -> str:
        """Name of the tensor's value in TFLite's own layout."""
        if index not in self.nchw:
            return self.name(index)
        out = self.unique(self.tensor_name(index) + "_nhwc")
        self.nodes.append(helper.make_node("Transpose", [self.name(index)], [out], perm=NCHW_TO_NHWC))
        return out

    def emit(self, op: str, inputs: list[str], out_index: int, activation: str | None = None,
             nchw: bool = True, **attrs: object) -> None:
        out = self.tensor_name(out_index)
        if out_index in self.outputs:  # the graph output itself is added by convert()
            out = self.unique(out)
        raw = self.unique(out) if activation else out
        self.nodes.append(helper.make_node(op, inputs, [raw], **attrs))
        if activation:
            self.nodes.append(helper.make_node(activation, [raw], [out]))
        self.names[out_index] = out
        if nchw:
            self.nchw.add(out_index)

    @staticmethod
    def same_pads(size: list[int], kernel: list[int], stride: list[int], dilation: list[int]) -> list[int]:
        """TensorFlow SAME padding as explicit ONNX pads (extra pixel at the end)."""
        begin, end = [], []
        for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    # -- operators -------------------------------------------------------
    def convert(self) -> onnx.ModelProto:
        graph = self.graph
        inputs = []
        for index in graph.InputsAsNumpy():
            shape = self.shape(index)
            name = self.tensor_name(index)
            # A free batch dimension lets the tracker run both eyes in one call.
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape[1:]]))
            transposed = self.unique(name + "_nchw")
            self.nodes.append(helper.make_node("Transpose", [name], [transposed], perm=NHWC_TO_NCHW))
            self.names[int(index)] = transposed
            self.nchw.add(int(index))
        for i in range(graph.OperatorsLength()):
            self.operator(graph.Operators(i))
        outputs = []
        for index in graph.OutputsAsNumpy():
            index = int(index)
            name = self.tensor_name(index)
            value = self.as_nhwc(index)
            final = name
            self.nodes.append(helper.make_node("Identity", [value], [final]))
            outputs.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, ["batch", *self.shape(index)[1:]]))
        onnx_graph = helper.make_graph(self.nodes, "graph", inputs, outputs, self.initializers)
        model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="maskproxy-models-convert")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def operator(self, op: tflite.Operator) -> None:
        code_entry = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(code_entry.BuiltinCode(), code_entry.DeprecatedBuiltinCode())
        kind = OP_NAMES[code]
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        handler = getattr(self, "op_" + kind.lower(), None)
        if handler is None:
            raise NotImplementedError(f"TFLite operator {kind} is not supported")
        handler(op, ins, out)

    def options(self, op: tflite.Operator, cls: type) -> object:
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def op_dequantize(self, op, ins, out) -> None:
        value = self.const(ins[0])
        if value is None:
            raise NotImplementedError("DEQUANTIZE of a non-constant tensor")
        self.consts[out] = value.astype(np.float32)

    def _conv(self, op, ins, out, depthwise: bool) -> None:
        opts = self.options(op, DepthwiseConv2DOptions if depthwise else Conv2DOptions)
        weight = self.const(ins[1])
        bias = self.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        in_shape = self.shape(ins[0])  # NHWC
        if depthwise:
            channels = in_shape[3]
            w = weight.transpose(3, 0, 1, 2)  # [1,KH,KW,C*M] -> [C*M,1,KH,KW]
            group = channels
        else:
            w = weight.transpose(0, 3, 1, 2)  # [O,KH,KW,I] -> [O,I,KH,KW]
            group = 1
        kernel = list(w.shape[2:])
        stride = [opts.StrideH(), opts.StrideW()]
        dilation = [opts.DilationHFactor(), opts.DilationWFactor()]
        pads = (self.same_pads(in_shape[1:3], kernel, stride, dilation) if opts.Padding() == 0
                else [0, 0, 0, 0])
        inputs = [self.name(ins[0]), self.add_const("w", w)]
        if bias is not None:
            inputs.append(self.add_const("b", bias))
        self.emit("Conv", inputs, out, ACTIVATIONS[opts.FusedActivationFunction()],
                  kernel_shape=kernel, strides=stride, dilations=dilation, pads=pads, group=group)

    def op_conv_2d(self, op, ins, out) -> None:
        self._conv(op, ins, out, depthwise=False)

    def op_depthwise_conv_2d(self, op, ins, out) -> None:
        self._conv(op, ins, out, depthwise=True)

    def op_prelu(self, op, ins, out) -> None:
        """PReLU as relu(x) - alpha * relu(-x), with every product a 1x1 depthwise Conv.

        Exact, and ONNX Runtime runs it all in its blocked (NCHWc) layout: the ReLUs fuse
        into the Convs and the sum into the last one, so no layout changes are needed
        around it. Its own PRelu kernel (per-channel broadcast, NCHW only) took two thirds
        of the models' run time; this form makes the models about 3.5x faster.
        """
        alpha = self.const(ins[1]).reshape(-1).astype(np.float32)
        channels = int(self.shape(ins[0])[3])
        if alpha.size == 1:
            alpha = np.full(channels, float(alpha[0]), np.float32)
        x = self.name(ins[0])
        base = self.unique(self.tensor_name(out))

        def scale(name: str, source: str, weights: np.ndarray, relu: bool) -> str:
            product = base + "_" + name
            kernel = self.add_const(name, weights.reshape(channels, 1, 1, 1).astype(np.float32))
            self.nodes.append(helper.make_node("Conv", [source, kernel], [product + ("_raw" if relu else "")],
                                               group=channels, kernel_shape=[1, 1]))
            if relu:
                self.nodes.append(helper.make_node("Relu", [product + "_raw"], [product]))
            return product

        positive = scale("pos", x, np.ones(channels), relu=True)
        negative = scale("neg", x, -np.ones(channels), relu=True)
        scaled = scale("slope", negative, -alpha, relu=False)
        self.emit("Add", [positive, scaled], out)

    def op_relu(self, op, ins, out) -> None:
        self.emit("Relu", [self.name(ins[0])], out, nchw=ins[0] in self.nchw)

    def op_add(self, op, ins, out) -> None:
        opts = self.options(op, AddOptions)
        a, b = ins
        if (a in self.nchw) != (b in self.nchw) and self.const(b) is None and self.const(a) is None:
            raise NotImplementedError("ADD of mixed layouts")
        self.emit("Add", [self.name(a), self.name(b)], out, ACTIVATIONS[opts.FusedActivationFunction()],
                  nchw=a in self.nchw or b in self.nchw)

    def op_max_pool_2d(self, op, ins, out) -> None:
        opts = self.options(op, Pool2DOptions)
        kernel = [opts.FilterHeight(), opts.FilterWidth()]
        stride = [opts.StrideH(), opts.StrideW()]
        pads = (self.same_pads(self.shape(ins[0])[1:3], kernel, stride, [1, 1]) if opts.Padding() == 0
                else [0, 0, 0, 0])
        self.emit("MaxPool", [self.name(ins[0])], out, ACTIVATIONS[opts.FusedActivationFunction()],
                  kernel_shape=kernel, strides=stride, pads=pads)

    def op_pad(self, op, ins, out) -> None:
        paddings = self.const(ins[1]).astype(np.int64)  # [[n0,n1],[h0,h1],[w0,w1],[c0,c1]]
        nchw = paddings[NHWC_TO_NCHW]
        pads = np.concatenate([nchw[:, 0], nchw[:, 1]])
        self.emit("Pad", [self.name(ins[0]), self.add_const("pads", pads)], out, mode="constant")

    def op_reshape(self, op, ins, out) -> None:
        shape = np.array([-1, *self.shape(out)[1:]], dtype=np.int64)  # keep the batch free
        self.emit("Reshape", [self.as_nhwc(ins[0]), self.add_const("shape", shape)], out, nchw=False)

    def op_concatenation(self, op, ins, out) -> None:
        opts = self.options(op, ConcatenationOptions)
        axis = opts.Axis()
        rank = len(self.shape(out))
        axis = axis % rank
        all_nchw = all(i in self.nchw for i in ins)
        if rank == 4 and all_nchw:
            names = [self.name(i) for i in ins]
            axis = NHWC_TO_NCHW.index(axis)
        else:
            names = [self.as_nhwc(i) for i in ins]
        self.emit("Concat", names, out, ACTIVATIONS[opts.FusedActivationFunction()],
                  nchw=rank == 4 and all_nchw, axis=axis)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="mediapipe-0.10.21 wheel (pip download mediapipe==0.10.21 --no-deps)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        for name, member in MODELS.items():
            data = wheel.read(member)
            model = Converter(data).convert()
            blob = model.SerializeToString()
            (args.out / f"{name}.onnx").write_bytes(blob)
            print(f"{member}  sha256 {sha256(data)}")
            print(f"  -> {name}.onnx  sha256 {sha256(blob)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
