// Fused preprocessing and paste-back kernels: one launch per batch each. The per-pixel math lives in
// simswap_kernels.cuh, shared with the host build that the CPU tests check against OpenCV.
#include "simswap_kernels.cuh"

// One thread per crop pixel; blockIdx.z is the face. Writes NCHW RGB [0, 1] straight into `out` (the
// engine's input buffer), float32 or, with `half`, float16. `inverse` holds one crop->frame matrix per face.
extern "C" __global__ void simswap_preprocess_kernel(const uint8_t* const* frames, const int* pitches,
                                                     const int* widths, const int* heights,
                                                     const int* frame_of_face, const Affine* inverse, int size,
                                                     int half, void* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int face = blockIdx.z;
    if (x >= size || y >= size) return;
    int f = frame_of_face[face];
    float rgb[3];
    preprocess_pixel(frames[f], pitches[f], widths[f], heights[f], inverse[face], x, y, rgb);
    store_nchw((char*)out + (long long)face * 3 * size * size * (half ? 2 : 4), half, size, x, y, rgb);
}

// One thread per pixel of each frame's region of interest (the union of its faces' regions); blockIdx.z
// is the frame, whose faces are [face_begin[f], face_begin[f + 1]). `crops[face]` is that face's generator
// output where it lies (NCHW RGB [0, 1], float32 or, with `half`, float16).
extern "C" __global__ void simswap_pasteback_kernel(uint8_t* const* frames, const int* pitches,
                                                    const int* union_rois, const int* face_begin,
                                                    const void* const* crops, int size, int half,
                                                    const Affine* forward, const int* rois, const float* masks,
                                                    const long long* mask_offsets) {
    int frame = blockIdx.z;
    const int* u = union_rois + 4 * frame;
    int x = u[0] + blockIdx.x * blockDim.x + threadIdx.x;
    int y = u[1] + blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= u[2] || y >= u[3]) return;
    pasteback_pixel(frames[frame], pitches[frame], face_begin[frame], face_begin[frame + 1], crops, size, half,
                    forward, rois, masks, mask_offsets, x, y);
}

// One thread per canvas pixel; blockIdx.z is the frame. Writes the detector input NCHW (3 x canvas x canvas per
// frame), float32 or, with `half`, float16, straight into the detector engine's input buffer. `resized` holds
// each frame's resized width and height, `scales` its source / resized size ratios (x, y).
extern "C" __global__ void simswap_letterbox_kernel(const uint8_t* const* frames, const int* pitches,
                                                    const int* widths, const int* heights, const int* resized,
                                                    const float* scales, int canvas, int swap_rb, float mean,
                                                    float scale, int half, void* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int f = blockIdx.z;
    if (x >= canvas || y >= canvas) return;
    float value[3];
    letterbox_pixel(frames[f], pitches[f], widths[f], heights[f], resized[2 * f], resized[2 * f + 1], scales[2 * f],
                    scales[2 * f + 1], swap_rb, mean, scale, x, y, value);
    store_nchw((char*)out + (long long)f * 3 * canvas * canvas * (half ? 2 : 4), half, canvas, x, y, value);
}

// One thread per crop pixel; blockIdx.z is the k-th face with a parsing mask, face `faces[k]` of the batch.
// Blends that face's generator output (`swapped`, rewritten in place) with its generator input (`targets`)
// by mask k of `masks` (size x size each), before the paste-back reads the output.
extern "C" __global__ void simswap_parsing_blend_kernel(void* swapped, int half_out, const void* targets, int half_in,
                                                        const float* masks, const int* faces, int size) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= size || y >= size) return;
    long long k = blockIdx.z, face = faces[k], values = 3LL * size * size;
    parsing_blend_pixel((char*)swapped + face * values * (half_out ? 2 : 4), half_out,
                        (const char*)targets + face * values * (half_in ? 2 : 4), half_in, masks + k * size * size,
                        size, x, y);
}

// One thread per parser input pixel; blockIdx.z is the face. Writes the face parser's float32 input
// [faces, 3, 512, 512] from the generator input `targets` (faces x 3 x size x size).
extern "C" __global__ void simswap_parser_input_kernel(const void* targets, int half, int size, float* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= SIMSWAP_PARSING_SIZE || y >= SIMSWAP_PARSING_SIZE) return;
    long long face = blockIdx.z, plane = (long long)SIMSWAP_PARSING_SIZE * SIMSWAP_PARSING_SIZE;
    const char* target = (const char*)targets + face * 3LL * size * size * (half ? 2 : 4);
    for (int c = 0; c < 3; ++c)
        out[(face * 3 + c) * plane + (long long)y * SIMSWAP_PARSING_SIZE + x] =
            parser_input_value(target, half, size, x, y, c);
}

// One thread per parser output pixel; blockIdx.z is the face. `labels` [faces, 512, 512] get the argmax of
// the logits [faces, 19, 512, 512].
extern "C" __global__ void simswap_parser_labels_kernel(const float* logits, uint8_t* labels) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= SIMSWAP_PARSING_SIZE || y >= SIMSWAP_PARSING_SIZE) return;
    long long face = blockIdx.z, plane = (long long)SIMSWAP_PARSING_SIZE * SIMSWAP_PARSING_SIZE;
    long long index = (long long)y * SIMSWAP_PARSING_SIZE + x;
    labels[face * plane + index] = parser_label(logits + face * SIMSWAP_PARSING_CLASSES * plane, index);
}

// One thread per enhancer crop pixel; blockIdx.z is the face. Writes the enhancer's input NCHW RGB [0, 1]
// (3 x size x size per face, float32 or, with `half_out`, float16) from each face's generator output (`swapped`,
// swap_size crops, `half_in`) placed by `to_swap` (enhancer crop -> generator crop), the frame around it placed
// by `inverse` (enhancer crop -> frame).
extern "C" __global__ void simswap_enhancer_input_kernel(const uint8_t* const* frames, const int* pitches,
                                                         const int* widths, const int* heights,
                                                         const int* frame_of_face, const Affine* inverse,
                                                         const Affine* to_swap, const void* swapped, int half_in,
                                                         int swap_size, int size, int half_out, void* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int face = blockIdx.z;
    if (x >= size || y >= size) return;
    int f = frame_of_face[face];
    const char* swap = (const char*)swapped + (long long)face * 3 * swap_size * swap_size * (half_in ? 2 : 4);
    float rgb[3];
    enhancer_input_pixel(frames[f], pitches[f], widths[f], heights[f], inverse[face], swap, half_in, swap_size,
                         to_swap[face], x, y, rgb);
    store_nchw((char*)out + (long long)face * 3 * size * size * (half_out ? 2 : 4), half_out, size, x, y, rgb);
}

// One thread per value of `count` values (blocks of any shape, one-dimensional grid): the enhancer's output
// (`enhanced`, rewritten in place) blended with its input by `blend`, before the paste-back reads it.
extern "C" __global__ void simswap_enhance_blend_kernel(void* enhanced, int half_out, const void* inputs, int half_in,
                                                        float blend, long long count) {
    long long threads = (long long)blockDim.x * blockDim.y;
    long long i = blockIdx.x * threads + (long long)threadIdx.y * blockDim.x + threadIdx.x;
    if (i >= count) return;
    store_value(enhanced, half_out, i,
                enhance_blend(load_value(enhanced, half_out, i), load_value(inputs, half_in, i), blend));
}
