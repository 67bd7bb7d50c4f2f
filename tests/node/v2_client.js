#!/usr/bin/env node
// Minimal KServe V2 / Triton gRPC client written against @grpc/grpc-js, used to
// check that aisf's inference.GRPCInferenceService works from a non-Python stack.
//
// Usage: node v2_client.js <descriptor_set.binpb> <host:port> <model_name>
//
// The service contract is loaded from a protobuf FileDescriptorSet (binary)
// holding grpc_service.proto and model_config.proto (package "inference").
// Prints exactly one JSON line on stdout:
//   {"live": bool, "model": name, "outputs": [{name, datatype, shape, data}]}
// On any failure, prints the error on stderr and exits non-zero.
'use strict';

const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEADLINE_MS = 10000;
const DEFAULT_LAST_DIM = 4;
const BATCH = 2;

const LOADER_OPTIONS = {
  keepCase: true, // field names exactly as in the .proto (snake_case)
  longs: String, // int64/uint64 decoded as decimal strings (no precision loss)
  enums: String,
  defaults: true, // absent scalars -> default, absent repeated -> []
  // bytes left unset on purpose: bytes fields decode to Buffer.
};

// Little-endian element readers for raw_*_contents, keyed by V2 datatype.
const RAW_READERS = {
  BOOL: { size: 1, read: (b, o) => b.readUInt8(o) !== 0 },
  UINT8: { size: 1, read: (b, o) => b.readUInt8(o) },
  UINT16: { size: 2, read: (b, o) => b.readUInt16LE(o) },
  UINT32: { size: 4, read: (b, o) => b.readUInt32LE(o) },
  UINT64: { size: 8, read: (b, o) => bigToJson(b.readBigUInt64LE(o)) },
  INT8: { size: 1, read: (b, o) => b.readInt8(o) },
  INT16: { size: 2, read: (b, o) => b.readInt16LE(o) },
  INT32: { size: 4, read: (b, o) => b.readInt32LE(o) },
  INT64: { size: 8, read: (b, o) => bigToJson(b.readBigInt64LE(o)) },
  FP16: { size: 2, read: (b, o) => halfToFloat(b.readUInt16LE(o)) },
  BF16: { size: 2, read: (b, o) => bf16ToFloat(b.readUInt16LE(o)) },
  FP32: { size: 4, read: (b, o) => b.readFloatLE(o) },
  FP64: { size: 8, read: (b, o) => b.readDoubleLE(o) },
};

// InferTensorContents field used for each datatype when raw contents are absent.
const CONTENTS_FIELDS = {
  BOOL: 'bool_contents',
  UINT8: 'uint_contents',
  UINT16: 'uint_contents',
  UINT32: 'uint_contents',
  UINT64: 'uint64_contents',
  INT8: 'int_contents',
  INT16: 'int_contents',
  INT32: 'int_contents',
  INT64: 'int64_contents',
  FP32: 'fp32_contents',
  FP64: 'fp64_contents',
  BYTES: 'bytes_contents',
};

// 64-bit integers: a JSON number when exactly representable, else a string.
function bigToJson(v) {
  const big = typeof v === 'bigint' ? v : BigInt(v);
  const lim = BigInt(Number.MAX_SAFE_INTEGER);
  return big <= lim && big >= -lim ? Number(big) : big.toString();
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function bf16ToFloat(h) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(h << 16 >>> 0, 0);
  return b.readFloatLE(0);
}

function numElements(shape) {
  return shape.reduce((n, d) => n * Number(d), 1);
}

function decodeRaw(datatype, buf) {
  if (datatype === 'BYTES') {
    // Each element: uint32 LE length prefix followed by that many bytes.
    const out = [];
    for (let o = 0; o < buf.length;) {
      const len = buf.readUInt32LE(o);
      out.push(buf.subarray(o + 4, o + 4 + len).toString('utf8'));
      o += 4 + len;
    }
    return out;
  }
  const reader = RAW_READERS[datatype];
  if (!reader) throw new Error(`unsupported output datatype ${datatype}`);
  if (buf.length % reader.size !== 0) {
    throw new Error(`raw buffer of ${buf.length} bytes is not a multiple of ${reader.size} for ${datatype}`);
  }
  // Read element-wise: the Buffer may be an unaligned view into the message,
  // so typed-array views (new Float32Array(buf.buffer, ...)) are not safe.
  const out = [];
  for (let o = 0; o < buf.length; o += reader.size) out.push(reader.read(buf, o));
  return out;
}

function decodeContents(datatype, contents) {
  const field = CONTENTS_FIELDS[datatype];
  if (!field) throw new Error(`unsupported output datatype ${datatype} in contents`);
  const values = (contents && contents[field]) || [];
  if (datatype === 'INT64' || datatype === 'UINT64') return values.map(bigToJson);
  if (datatype === 'BYTES') return values.map((b) => Buffer.from(b).toString('utf8'));
  return values.map((v) => v);
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, { deadline }, (err, resp) => {
      if (err) {
        reject(new Error(`${method} failed: ${err.code} ${err.details || err.message}`));
      } else {
        resolve(resp);
      }
    });
  });
}

async function main(argv) {
  if (argv.length !== 3) {
    throw new Error('usage: node v2_client.js <descriptor_set.binpb> <host:port> <model_name>');
  }
  const [descriptorPath, target, modelName] = argv;

  const packageDefinition = protoLoader.loadFileDescriptorSetFromBuffer(
    fs.readFileSync(descriptorPath), LOADER_OPTIONS);
  const proto = grpc.loadPackageDefinition(packageDefinition);
  const Service = proto.inference && proto.inference.GRPCInferenceService;
  if (!Service) throw new Error(`no inference.GRPCInferenceService in ${descriptorPath}`);

  const client = new Service(target, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
  });
  try {
    const live = await call(client, 'ServerLive', {});
    const meta = await call(client, 'ModelMetadata', { name: modelName, version: '' });
    if (!meta.inputs || meta.inputs.length === 0) {
      throw new Error(`model ${modelName} metadata lists no inputs`);
    }
    const input = meta.inputs[0];
    const dims = (input.shape || []).map(Number);
    let lastDim = dims.length ? dims[dims.length - 1] : -1;
    if (!(lastDim > 0)) lastDim = DEFAULT_LAST_DIM;

    const shape = [BATCH, lastDim];
    const count = numElements(shape);
    const raw = Buffer.alloc(count * 4);
    for (let i = 0; i < count; i++) raw.writeFloatLE(i * 0.1, i * 4);

    const resp = await call(client, 'ModelInfer', {
      model_name: modelName,
      model_version: '',
      id: 'node-v2-client',
      inputs: [{ name: input.name, datatype: 'FP32', shape }],
      raw_input_contents: [raw],
    });

    const rawOut = resp.raw_output_contents || [];
    const outputs = (resp.outputs || []).map((out, i) => {
      const outShape = (out.shape || []).map(bigToJson);
      const data = rawOut.length > 0
        ? decodeRaw(out.datatype, rawOut[i] || Buffer.alloc(0))
        : decodeContents(out.datatype, out.contents);
      return { name: out.name, datatype: out.datatype, shape: outShape, data };
    });

    process.stdout.write(JSON.stringify({
      live: Boolean(live.live),
      model: meta.name || modelName,
      outputs,
    }) + '\n');
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`v2_client: ${err && err.message ? err.message : err}\n`);
  process.exitCode = 1;
});
