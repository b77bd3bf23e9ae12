// Per-pixel math of the fused preprocessing and paste-back, written once for the device kernels
// (simswap_kernels.cu) and the host build (host.cpp) that the CPU tests compare with OpenCV.
//
// Conventions (OpenCV warpAffine): pixel centres at integer coordinates, dst(x, y) = src(M * (x, y, 1)),
// bilinear in float32 (floor, then two horizontal lerps and one vertical lerp), every neighbour outside
// the source reads as 0 (BORDER_CONSTANT, black).
#pragma once
#if defined(__CUDACC_RTC__)  // NVRTC has no C library headers
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
#else
#include <stdint.h>
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SIMSWAP_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#include <string.h>
#define SIMSWAP_HD static inline
#endif

// A 2x3 affine matrix, row-major: x' = m[0] x + m[1] y + m[2], y' = m[3] x + m[4] y + m[5].
struct Affine {
    float m[6];
};

SIMSWAP_HD float simswap_floorf(float v) { return floorf(v); }

// Channel c of the uint8 interleaved image (3 channels, row pitch in bytes) at integer (x, y); 0 outside.
SIMSWAP_HD float pixel_u8(const uint8_t* image, int pitch, int width, int height, int x, int y, int c) {
    return (x >= 0 && y >= 0 && x < width && y < height) ? (float)image[y * pitch + 3 * x + c] : 0.0f;
}

SIMSWAP_HD float lerp_f32(float a, float b, float t) { return a + (b - a) * t; }

// Bilinear sample of all 3 channels of a uint8 image at (fx, fy).
SIMSWAP_HD void sample_u8(const uint8_t* image, int pitch, int width, int height, float fx, float fy, float out[3]) {
    float x0f = simswap_floorf(fx), y0f = simswap_floorf(fy);
    float ax = fx - x0f, ay = fy - y0f;
    int x0 = (int)x0f, y0 = (int)y0f;
    for (int c = 0; c < 3; ++c) {
        float top = lerp_f32(pixel_u8(image, pitch, width, height, x0, y0, c),
                             pixel_u8(image, pitch, width, height, x0 + 1, y0, c), ax);
        float bottom = lerp_f32(pixel_u8(image, pitch, width, height, x0, y0 + 1, c),
                                pixel_u8(image, pitch, width, height, x0 + 1, y0 + 1, c), ax);
        out[c] = lerp_f32(top, bottom, ay);
    }
}

SIMSWAP_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

// IEEE binary16 bits of f, rounded to nearest even (the same integer steps on host and device, so FP16
// engine inputs are bit-identical to the host build's).
SIMSWAP_HD uint16_t half_bits(float value) {
    uint32_t f = float_bits(value);
    uint32_t sign = (f & 0x80000000u) >> 16, exponent = f & 0x7f800000u, mantissa = f & 0x007fffffu;
    if (exponent >= 0x47800000u)  // overflow, inf, nan
        return (uint16_t)(sign | 0x7c00u | (exponent == 0x7f800000u && mantissa ? 0x0200u : 0u));
    if (exponent <= 0x38000000u) {  // half subnormal or zero
        if (exponent < 0x33000000u) return (uint16_t)sign;
        mantissa = (mantissa | 0x00800000u) >> (113u - (exponent >> 23));
        // ties to even; the shift may have dropped up to 11 low bits, so they count as "above the tie"
        if ((mantissa & 0x00003fffu) != 0x00001000u || (f & 0x000007ffu)) mantissa += 0x00001000u;
        return (uint16_t)(sign + (mantissa >> 13));
    }
    uint32_t half = ((exponent - 0x38000000u) >> 13) + (mantissa >> 13);
    uint32_t rest = mantissa & 0x00001fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half += 1u;  // carries into the exponent as it should
    return (uint16_t)(sign + half);
}

SIMSWAP_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

// The float value of IEEE binary16 bits (exact).
SIMSWAP_HD float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        float v = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exponent == 31) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// BGR channel c, scaled to [0, 255], of a generator output crop at integer (x, y); 0 outside. The crop is
// the generator's own layout: NCHW RGB in [0, 1] (3 x size x size), float32 or, with `half`, float16.
SIMSWAP_HD float generator_pixel(const void* crop, int half, int size, int x, int y, int c) {
    if (x < 0 || y < 0 || x >= size || y >= size) return 0.0f;
    long long index = (long long)(2 - c) * size * size + (long long)y * size + x;
    float v = half ? half_to_float(((const uint16_t*)crop)[index]) : ((const float*)crop)[index];
    return v * 255.0f;
}

// Bilinear sample of all 3 (BGR, [0, 255]) channels of a generator output crop at (fx, fy).
SIMSWAP_HD void sample_generator(const void* crop, int half, int size, float fx, float fy, float out[3]) {
    float x0f = simswap_floorf(fx), y0f = simswap_floorf(fy);
    float ax = fx - x0f, ay = fy - y0f;
    int x0 = (int)x0f, y0 = (int)y0f;
    for (int c = 0; c < 3; ++c) {
        float top = lerp_f32(generator_pixel(crop, half, size, x0, y0, c),
                             generator_pixel(crop, half, size, x0 + 1, y0, c), ax);
        float bottom = lerp_f32(generator_pixel(crop, half, size, x0, y0 + 1, c),
                                generator_pixel(crop, half, size, x0 + 1, y0 + 1, c), ax);
        out[c] = lerp_f32(top, bottom, ay);
    }
}

// Preprocess one crop pixel (x, y): sample the BGR frame through crop->frame matrix `inv`, round to a
// level (the uint8 crop that OpenCV's warp, the CPU pipeline and the official code make) and return RGB in
// [0, 1].
SIMSWAP_HD void preprocess_pixel(const uint8_t* frame, int pitch, int width, int height, Affine inv, int x, int y,
                                 float rgb[3]) {
    float fx = inv.m[0] * (float)x + (inv.m[1] * (float)y + inv.m[2]);
    float fy = inv.m[3] * (float)x + (inv.m[4] * (float)y + inv.m[5]);
    float bgr[3];
    sample_u8(frame, pitch, width, height, fx, fy, bgr);
    for (int c = 0; c < 3; ++c) rgb[c] = rintf(bgr[2 - c]) * (1.0f / 255.0f);
}

// Store the pixel into the NCHW generator input of one face (3 x size x size), as float32 or float16 bits.
SIMSWAP_HD void store_nchw(void* out, int half, int size, int x, int y, const float rgb[3]) {
    int plane = size * size, index = y * size + x;
    for (int c = 0; c < 3; ++c) {
        if (half)
            ((uint16_t*)out)[c * plane + index] = half_bits(rgb[c]);
        else
            ((float*)out)[c * plane + index] = rgb[c];
    }
}

// Blend one frame pixel (x, y) with a swapped face: `crop` is the generator output (see generator_pixel),
// `forward` the frame->crop matrix, `mask` the official border mask in [0, 1] for this pixel. `value` holds
// the pixel's running (not yet truncated) BGR values and is updated in place.
SIMSWAP_HD void blend_pixel(const void* crop, int half, int size, Affine forward, float mask, int x, int y,
                            float value[3]) {
    if (mask <= 0.0f) return;
    float fx = forward.m[0] * (float)x + (forward.m[1] * (float)y + forward.m[2]);
    float fy = forward.m[3] * (float)x + (forward.m[4] * (float)y + forward.m[5]);
    float face[3];
    sample_generator(crop, half, size, fx, fy, face);
    for (int c = 0; c < 3; ++c) value[c] = mask * face[c] + (1.0f - mask) * value[c];
}

// Truncation to uint8, as the official composite (values are already within [0, 255]).
SIMSWAP_HD uint8_t truncate_u8(float v) { return (uint8_t)(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v)); }

// Paste-back of one frame pixel (x, y): faces [face_begin, face_end) whose region contains it are blended
// in order, then the pixel is truncated once. `crops[face]` points to each face's generator output, `rois`
// are x0, y0, x1, y1 per face (empty for a face outside the frame); `masks` the faces' official border
// masks over their regions, concatenated at `mask_offsets`.
SIMSWAP_HD void pasteback_pixel(uint8_t* frame, int pitch, int face_begin, int face_end, const void* const* crops,
                                int size, int half, const Affine* forward, const int* rois, const float* masks,
                                const long long* mask_offsets, int x, int y) {
    uint8_t* pixel = frame + (long long)y * pitch + 3 * x;
    float value[3] = {(float)pixel[0], (float)pixel[1], (float)pixel[2]};
    bool touched = false;
    for (int face = face_begin; face < face_end; ++face) {
        const int* r = rois + 4 * face;
        if (x < r[0] || y < r[1] || x >= r[2] || y >= r[3]) continue;
        float mask = masks[mask_offsets[face] + (long long)(y - r[1]) * (r[2] - r[0]) + (x - r[0])];
        blend_pixel(crops[face], half, size, forward[face], mask, x, y, value);
        touched = true;
    }
    if (touched)
        for (int c = 0; c < 3; ++c) pixel[c] = truncate_u8(value[c]);
}

// -- detector input: letterbox + normalisation ---------------------------------------------------------------
// The detectors' canvas (simswap_trt.vision.detect.letterbox): each frame resized so its longer side fills the
// square canvas, placed top-left, zero padding. The resize follows cv2.resize INTER_LINEAR's geometry: pixel
// centres at +0.5, source coordinate (d + 0.5) * scale - 0.5 clamped to [0, size - 1] (border replicate), two
// taps per axis. It interpolates in float32 and rounds to a level (OpenCV's uint8 resize uses 11-bit fixed-point
// weights, so a few pixels differ from OpenCV's canvas by one level), then normalises exactly as the CPU code
// does from that level: value = (level - mean) * scale, channels in RGB order when `swap_rb` (BGR frames).

// Source coordinate of destination index d for a resize by `scale` (source / destination size).
SIMSWAP_HD float resize_source(int d, float scale, int size) {
    float f = ((float)d + 0.5f) * scale - 0.5f;
    float last = (float)(size - 1);
    return f < 0.0f ? 0.0f : (f > last ? last : f);
}

// Canvas pixel (x, y) of one frame resized to `resized_w` x `resized_h` (scales: source / resized size), its
// three normalised values in output channel order.
SIMSWAP_HD void letterbox_pixel(const uint8_t* frame, int pitch, int width, int height, int resized_w,
                                int resized_h, float scale_x, float scale_y, int swap_rb, float mean, float scale,
                                int x, int y, float out[3]) {
    float level[3] = {0.0f, 0.0f, 0.0f};
    if (x < resized_w && y < resized_h) {
        sample_u8(frame, pitch, width, height, resize_source(x, scale_x, width), resize_source(y, scale_y, height),
                  level);
        for (int c = 0; c < 3; ++c) level[c] = rintf(level[c]);
    }
    for (int c = 0; c < 3; ++c) out[c] = (level[swap_rb ? 2 - c : c] - mean) * scale;
}

// -- parsing-mask blend (the official --use_mask), in crop space before paste-back ----------------------------

// One value of an NCHW tensor stored as float32 or, with `half`, float16.
SIMSWAP_HD float load_value(const void* data, int half, long long index) {
    return half ? half_to_float(((const uint16_t*)data)[index]) : ((const float*)data)[index];
}

SIMSWAP_HD void store_value(void* data, int half, long long index, float v) {
    if (half)
        ((uint16_t*)data)[index] = half_bits(v);
    else
        ((float*)data)[index] = v;
}

// swap * mask + target * (1 - mask), in float32 and in this order (as the host path's NumPy expression).
SIMSWAP_HD float parsing_blend(float swapped, float target, float mask) {
    return swapped * mask + target * (1.0f - mask);
}

// Crop pixel (x, y) of one face: its generator output `swapped` (NCHW RGB [0, 1], rewritten in place) blended
// with its generator input `target` (the preprocessed target crop) by its parsing mask `mask` (size x size).
SIMSWAP_HD void parsing_blend_pixel(void* swapped, int half_out, const void* target, int half_in, const float* mask,
                                    int size, int x, int y) {
    long long plane = (long long)size * size, index = (long long)y * size + x;
    float m = mask[index];
    for (int c = 0; c < 3; ++c) {
        long long i = c * plane + index;
        float blended = parsing_blend(load_value(swapped, half_out, i), load_value(target, half_in, i), m);
        store_value(swapped, half_out, i, blended);
    }
}

// -- face parser on the device: its input made from the generator input, its logits reduced to labels -------

#define SIMSWAP_PARSING_SIZE 512
#define SIMSWAP_PARSING_CLASSES 19

// Parser input pixel (x, y), channel c, of one face: the target crop (NCHW RGB [0, 1], size x size, float32
// or, with `half`, float16) resized to 512 x 512 by nearest neighbour (source index x * size / 512, as
// torch's 'nearest') and ImageNet-normalised, (value - mean) / std in float32.
SIMSWAP_HD float parser_input_value(const void* target, int half, int size, int x, int y, int c) {
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    int sx = x * size / SIMSWAP_PARSING_SIZE, sy = y * size / SIMSWAP_PARSING_SIZE;
    float v = load_value(target, half, ((long long)c * size + sy) * size + sx);
    return (v - mean[c]) / std[c];
}

// The label of parser output pixel `index` (of 512 * 512) of one face: the first class with the largest logit
// (as NumPy's argmax).
SIMSWAP_HD uint8_t parser_label(const float* logits, long long index) {
    const long long plane = (long long)SIMSWAP_PARSING_SIZE * SIMSWAP_PARSING_SIZE;
    int best = 0;
    float top = logits[index];
    for (int k = 1; k < SIMSWAP_PARSING_CLASSES; ++k)
        if (logits[k * plane + index] > top) top = logits[k * plane + index], best = k;
    return (uint8_t)best;
}

// -- face enhancer on the device: its input made from the swap where it lies, its output blended with it ------

// RGB in [0, 1] and coverage of a generator output crop at (fx, fy): a bilinear sample with zero outside the
// crop (as cv2.warpAffine with a constant zero border), and `cover`, the same sample of an all-ones crop: the
// share of the pixel that the crop covers.
SIMSWAP_HD float sample_swap(const void* crop, int half, int size, float fx, float fy, float rgb[3]) {
    float x0f = simswap_floorf(fx), y0f = simswap_floorf(fy);
    float ax = fx - x0f, ay = fy - y0f;
    int x0 = (int)x0f, y0 = (int)y0f;
    float bgr[3];
    sample_generator(crop, half, size, fx, fy, bgr);
    for (int c = 0; c < 3; ++c) rgb[c] = bgr[2 - c] * (1.0f / 255.0f);
    float inside[4];
    for (int k = 0; k < 4; ++k) {
        int x = x0 + (k & 1), y = y0 + (k >> 1);
        inside[k] = (x >= 0 && y >= 0 && x < size && y < size) ? 1.0f : 0.0f;
    }
    return lerp_f32(lerp_f32(inside[0], inside[1], ax), lerp_f32(inside[2], inside[3], ax), ay);
}

// Enhancer input pixel (x, y) of one face, RGB in [0, 1] (simswap_trt.vision.enhance.to_enhancer_crops): the
// swap (`swapped`, the generator's output crop) sampled through `to_swap` (enhancer crop -> generator crop),
// and where it does not cover the pixel, the frame sampled through `inverse` (enhancer crop -> frame) and
// rounded to a level, as the host's uint8 warp.
SIMSWAP_HD void enhancer_input_pixel(const uint8_t* frame, int pitch, int width, int height, Affine inverse,
                                     const void* swapped, int half, int swap_size, Affine to_swap, int x, int y,
                                     float rgb[3]) {
    float around[3], face[3];
    preprocess_pixel(frame, pitch, width, height, inverse, x, y, around);
    float fx = to_swap.m[0] * (float)x + (to_swap.m[1] * (float)y + to_swap.m[2]);
    float fy = to_swap.m[3] * (float)x + (to_swap.m[4] * (float)y + to_swap.m[5]);
    float cover = sample_swap(swapped, half, swap_size, fx, fy, face);
    for (int c = 0; c < 3; ++c) rgb[c] = face[c] + (1.0f - cover) * around[c];
}

// blend * enhanced + (1 - blend) * input, in float32 and in this order (as the host path's NumPy expression).
SIMSWAP_HD float enhance_blend(float enhanced, float input, float blend) {
    return blend * enhanced + (1.0f - blend) * input;
}
