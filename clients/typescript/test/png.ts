/** A minimal PNG encoder and header reader for test images (8-bit, no interlace). */
import { deflateSync } from "node:zlib";

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) {
    c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  }
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc = (CRC_TABLE[(crc ^ byte) & 0xff] ?? 0) ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Encodes `pixels` (row-major, `channels` bytes a pixel: 1 gray, 3 RGB) as PNG. */
export function encodePng(
  width: number,
  height: number,
  channels: 1 | 3,
  pixels: Uint8Array,
): Uint8Array {
  if (pixels.length !== width * height * channels) {
    throw new RangeError(`expected ${width * height * channels} bytes, got ${pixels.length}`);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = channels === 3 ? 2 : 0; // colour type: truecolour or greyscale
  const stride = width * channels;
  const raw = Buffer.alloc((stride + 1) * height); // filter byte 0 (none) a row
  for (let y = 0; y < height; y++) {
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  return Buffer.concat([
    PNG_SIGNATURE,
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", new Uint8Array()),
  ]);
}

/** Width and height from a PNG's IHDR chunk. */
export function pngSize(png: Uint8Array): { width: number; height: number } {
  const bytes = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (bytes.length < 24 || !bytes.subarray(0, 8).equals(PNG_SIGNATURE)) {
    throw new Error("not a PNG");
  }
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/** A smooth RGB test card with a few hard edges, `size` × `size`. */
export function testCard(size: number): Uint8Array {
  const pixels = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      const stripe = Math.floor(x / 16) % 2 === 0 ? 40 : 0;
      pixels[i] = Math.round((255 * x) / (size - 1));
      pixels[i + 1] = Math.round((255 * y) / (size - 1));
      pixels[i + 2] = 128 + stripe;
    }
  }
  return pixels;
}

/** A grey mask: white (replace) inside [x0, x1) × [y0, y1), black elsewhere. */
export function squareMask(size: number, x0: number, y0: number, x1: number, y1: number): Uint8Array {
  const pixels = new Uint8Array(size * size);
  for (let y = y0; y < y1; y++) {
    pixels.fill(255, y * size + x0, y * size + x1);
  }
  return pixels;
}
