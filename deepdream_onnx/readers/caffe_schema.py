"""Caffe's protobuf schema, the part DeepDream reads, built at run time.

Field numbers, types and defaults are those of BVLC Caffe's src/caffe/proto/caffe.proto;
messages and fields left out (solver, other layer types' parameters) simply parse as
unknown fields.  Building the descriptors here spares a protoc step and generated
_pb2 files that pin one protobuf version.
"""

from functools import lru_cache
from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "caffe"

# A proto2 subset in a line-per-field notation:
#   message Name                      (fields follow, indented)
#   enum Name A=0 B=1                 (top level, or indented: nested in the message)
#       C=2 D=3                       (deeper indented: more values of the line above)
#   <label> <type> <name> = <number> [default=<text>] [packed]
_SCHEMA = """
enum Phase TRAIN=0 TEST=1

message BlobShape
  repeated int64 dim = 1 packed

message BlobProto
  optional BlobShape shape = 7
  repeated float data = 5 packed
  repeated float diff = 6 packed
  repeated double double_data = 8 packed
  repeated double double_diff = 9 packed
  optional int32 num = 1 default=0
  optional int32 channels = 2 default=0
  optional int32 height = 3 default=0
  optional int32 width = 4 default=0

message BlobProtoVector
  repeated BlobProto blobs = 1

message FillerParameter
  optional string type = 1 default=constant
  optional float value = 2 default=0
  optional float min = 3 default=0
  optional float max = 4 default=1
  optional float mean = 5 default=0
  optional float std = 6 default=1
  optional int32 sparse = 7 default=-1
  enum VarianceNorm FAN_IN=0 FAN_OUT=1 AVERAGE=2
  optional VarianceNorm variance_norm = 8 default=FAN_IN

message NetParameter
  optional string name = 1
  repeated string input = 3
  repeated BlobShape input_shape = 8
  repeated int32 input_dim = 4
  optional bool force_backward = 5 default=false
  optional NetState state = 6
  optional bool debug_info = 7 default=false
  repeated LayerParameter layer = 100
  repeated V1LayerParameter layers = 2

message NetState
  optional Phase phase = 1 default=TEST
  optional int32 level = 2 default=0
  repeated string stage = 3

message NetStateRule
  optional Phase phase = 1
  optional int32 min_level = 2
  optional int32 max_level = 3
  repeated string stage = 4
  repeated string not_stage = 5

message ParamSpec
  optional string name = 1
  enum DimCheckMode STRICT=0 PERMISSIVE=1
  optional DimCheckMode share_mode = 2
  optional float lr_mult = 3 default=1
  optional float decay_mult = 4 default=1

message LayerParameter
  optional string name = 1
  optional string type = 2
  repeated string bottom = 3
  repeated string top = 4
  optional Phase phase = 10
  repeated float loss_weight = 5
  repeated ParamSpec param = 6
  repeated BlobProto blobs = 7
  repeated bool propagate_down = 11
  repeated NetStateRule include = 8
  repeated NetStateRule exclude = 9
  optional TransformationParameter transform_param = 100
  optional LossParameter loss_param = 101
  optional AccuracyParameter accuracy_param = 102
  optional ConcatParameter concat_param = 104
  optional ConvolutionParameter convolution_param = 106
  optional DataParameter data_param = 107
  optional DropoutParameter dropout_param = 108
  optional InnerProductParameter inner_product_param = 117
  optional InputParameter input_param = 143
  optional LRNParameter lrn_param = 118
  optional PoolingParameter pooling_param = 121
  optional ReLUParameter relu_param = 123
  optional SoftmaxParameter softmax_param = 125

message TransformationParameter
  optional float scale = 1 default=1
  optional bool mirror = 2 default=false
  optional uint32 crop_size = 3 default=0
  optional string mean_file = 4
  repeated float mean_value = 5
  optional bool force_color = 6 default=false
  optional bool force_gray = 7 default=false

message LossParameter
  optional int32 ignore_label = 1
  enum NormalizationMode FULL=0 VALID=1 BATCH_SIZE=2 NONE=3
  optional NormalizationMode normalization = 3 default=VALID
  optional bool normalize = 2

message AccuracyParameter
  optional uint32 top_k = 1 default=1
  optional int32 axis = 2 default=1
  optional int32 ignore_label = 3

message ConcatParameter
  optional int32 axis = 2 default=1
  optional uint32 concat_dim = 1 default=1

message ConvolutionParameter
  optional uint32 num_output = 1
  optional bool bias_term = 2 default=true
  repeated uint32 pad = 3
  repeated uint32 kernel_size = 4
  repeated uint32 stride = 6
  repeated uint32 dilation = 18
  optional uint32 pad_h = 9 default=0
  optional uint32 pad_w = 10 default=0
  optional uint32 kernel_h = 11
  optional uint32 kernel_w = 12
  optional uint32 stride_h = 13
  optional uint32 stride_w = 14
  optional uint32 group = 5 default=1
  optional FillerParameter weight_filler = 7
  optional FillerParameter bias_filler = 8
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  optional Engine engine = 15 default=DEFAULT
  optional int32 axis = 16 default=1
  optional bool force_nd_im2col = 17 default=false

message DataParameter
  enum DB LEVELDB=0 LMDB=1
  optional string source = 1
  optional uint32 batch_size = 4
  optional uint32 rand_skip = 7 default=0
  optional DB backend = 8 default=LEVELDB
  optional float scale = 2 default=1
  optional string mean_file = 3
  optional uint32 crop_size = 5 default=0
  optional bool mirror = 6 default=false
  optional bool force_encoded_color = 9 default=false
  optional uint32 prefetch = 10 default=4

message DropoutParameter
  optional float dropout_ratio = 1 default=0.5

message InnerProductParameter
  optional uint32 num_output = 1
  optional bool bias_term = 2 default=true
  optional FillerParameter weight_filler = 3
  optional FillerParameter bias_filler = 4
  optional int32 axis = 5 default=1
  optional bool transpose = 6 default=false

message InputParameter
  repeated BlobShape shape = 1

message LRNParameter
  optional uint32 local_size = 1 default=5
  optional float alpha = 2 default=1
  optional float beta = 3 default=0.75
  enum NormRegion ACROSS_CHANNELS=0 WITHIN_CHANNEL=1
  optional NormRegion norm_region = 4 default=ACROSS_CHANNELS
  optional float k = 5 default=1
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  optional Engine engine = 6 default=DEFAULT

message PoolingParameter
  enum PoolMethod MAX=0 AVE=1 STOCHASTIC=2
  optional PoolMethod pool = 1 default=MAX
  optional uint32 pad = 4 default=0
  optional uint32 pad_h = 9 default=0
  optional uint32 pad_w = 10 default=0
  optional uint32 kernel_size = 2
  optional uint32 kernel_h = 5
  optional uint32 kernel_w = 6
  optional uint32 stride = 3 default=1
  optional uint32 stride_h = 7
  optional uint32 stride_w = 8
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  optional Engine engine = 11 default=DEFAULT
  optional bool global_pooling = 12 default=false
  enum RoundMode CEIL=0 FLOOR=1
  optional RoundMode round_mode = 13 default=CEIL

message ReLUParameter
  optional float negative_slope = 1 default=0
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  optional Engine engine = 2 default=DEFAULT

message SoftmaxParameter
  enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
  optional Engine engine = 1 default=DEFAULT
  optional int32 axis = 2 default=1

message V1LayerParameter
  repeated string bottom = 2
  repeated string top = 3
  optional string name = 4
  repeated NetStateRule include = 32
  repeated NetStateRule exclude = 33
  enum LayerType
    NONE=0 ABSVAL=35 ACCURACY=1 ARGMAX=30 BNLL=2 CONCAT=3 CONTRASTIVE_LOSS=37
    CONVOLUTION=4 DATA=5 DECONVOLUTION=39 DROPOUT=6 DUMMY_DATA=32 EUCLIDEAN_LOSS=7
    ELTWISE=25 EXP=38 FLATTEN=8 HDF5_DATA=9 HDF5_OUTPUT=10 HINGE_LOSS=28 IM2COL=11
    IMAGE_DATA=12 INFOGAIN_LOSS=13 INNER_PRODUCT=14 LRN=15 MEMORY_DATA=29
    MULTINOMIAL_LOGISTIC_LOSS=16 MVN=34 POOLING=17 POWER=26 RELU=18 SIGMOID=19
    SIGMOID_CROSS_ENTROPY_LOSS=27 SILENCE=36 SOFTMAX=20 SOFTMAX_LOSS=21 SPLIT=22
    SLICE=33 TANH=23 WINDOW_DATA=24 THRESHOLD=31
  optional LayerType type = 5
  repeated BlobProto blobs = 6
  repeated string param = 1001
  enum DimCheckMode STRICT=0 PERMISSIVE=1
  repeated DimCheckMode blob_share_mode = 1002
  repeated float blobs_lr = 7
  repeated float weight_decay = 8
  repeated float loss_weight = 35
  optional AccuracyParameter accuracy_param = 27
  optional ConcatParameter concat_param = 9
  optional ConvolutionParameter convolution_param = 10
  optional DataParameter data_param = 11
  optional DropoutParameter dropout_param = 12
  optional InnerProductParameter inner_product_param = 17
  optional LRNParameter lrn_param = 18
  optional PoolingParameter pooling_param = 19
  optional ReLUParameter relu_param = 30
  optional SoftmaxParameter softmax_param = 39
  optional TransformationParameter transform_param = 36
  optional LossParameter loss_param = 42
"""

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _FDP.TYPE_DOUBLE, "float": _FDP.TYPE_FLOAT, "int64": _FDP.TYPE_INT64,
    "uint64": _FDP.TYPE_UINT64, "int32": _FDP.TYPE_INT32, "uint32": _FDP.TYPE_UINT32,
    "bool": _FDP.TYPE_BOOL, "string": _FDP.TYPE_STRING, "bytes": _FDP.TYPE_BYTES,
}
_LABELS = {"optional": _FDP.LABEL_OPTIONAL, "repeated": _FDP.LABEL_REPEATED}


def _add_enum(enum_list, words):
    enum = enum_list.add(name=words[1])
    for item in words[2:]:
        name, number = item.split("=")
        enum.value.add(name=name, number=int(number))


def _parse_schema(text):
    """(top-level enum words, {message: [field words or nested enum words]})."""
    enums, messages, current, words = [], {}, None, None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("    "):
            words.extend(line.split())
            continue
        words = line.split()
        if line.startswith(" "):
            current.append(words)
        elif words[0] == "enum":
            enums.append(words)
        else:
            current = messages.setdefault(words[1], [])
    return enums, messages


def schema_file():
    """A new FileDescriptorProto of the schema (callers may alter their copy)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="deepdream_onnx/caffe.proto", package=PACKAGE, syntax="proto2")
    enums, messages = _parse_schema(_SCHEMA)
    top_enums = {words[1] for words in enums}
    for words in enums:
        _add_enum(fdp.enum_type, words)
    for msg_name, lines in messages.items():
        msg = fdp.message_type.add(name=msg_name)
        nested = {words[1] for words in lines if words[0] == "enum"}
        for words in lines:
            if words[0] == "enum":
                _add_enum(msg.enum_type, words)
                continue
            label, type_name, name, _, number = words[:5]
            field = msg.field.add(name=name, number=int(number), label=_LABELS[label])
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            elif type_name in nested:
                field.type = _FDP.TYPE_ENUM
                field.type_name = f".{PACKAGE}.{msg_name}.{type_name}"
            elif type_name in top_enums:
                field.type = _FDP.TYPE_ENUM
                field.type_name = f".{PACKAGE}.{type_name}"
            else:
                field.type = _FDP.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{type_name}"
            for option in words[5:]:
                if option == "packed":
                    field.options.packed = True
                else:
                    key, value = option.split("=", 1)
                    assert key == "default", option
                    field.default_value = value
    return fdp


def _message_class(pool, full_name):
    descriptor = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def build_messages(fdp):
    """Message classes of a schema file, in a private pool, as attributes by name."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    return SimpleNamespace(**{
        msg.name: _message_class(pool, f"{fdp.package}.{msg.name}")
        for msg in fdp.message_type
    })


@lru_cache(maxsize=None)
def messages():
    """The Caffe message classes (built once): messages().NetParameter etc."""
    return build_messages(schema_file())
