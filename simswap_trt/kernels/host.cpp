// Host build of the kernels' per-pixel math (simswap_kernels.cuh) in plain loops, with the same batch
// arguments as the device kernels. Used by the CPU tests; not a product path.
#include "simswap_kernels.cuh"

extern "C" {

void simswap_preprocess_host(const uint8_t* const* frames, const int* pitches, const int* widths,
                             const int* heights, const int* frame_of_face, const Affine* inverse, int faces,
                             int size, int half, void* out) {
    for (int face = 0; face < faces; ++face) {
        int f = frame_of_face[face];
        char* face_out = (char*)out + (long long)face * 3 * size * size * (half ? 2 : 4);
        for (int y = 0; y < size; ++y)
            for (int x = 0; x < size; ++x) {
                float rgb[3];
                preprocess_pixel(frames[f], pitches[f], widths[f], heights[f], inverse[face], x, y, rgb);
                store_nchw(face_out, half, size, x, y, rgb);
            }
    }
}

void simswap_pasteback_host(uint8_t* const* frames, const int* pitches, int frame_count, const int* union_rois,
                            const int* face_begin, const void* const* crops, int size, int half,
                            const Affine* forward, const int* rois, const float* masks,
                            const long long* mask_offsets) {
    for (int frame = 0; frame < frame_count; ++frame) {
        const int* u = union_rois + 4 * frame;
        for (int y = u[1]; y < u[3]; ++y)
            for (int x = u[0]; x < u[2]; ++x)
                pasteback_pixel(frames[frame], pitches[frame], face_begin[frame], face_begin[frame + 1], crops, size,
                                half, forward, rois, masks, mask_offsets, x, y);
    }
}

void simswap_letterbox_host(const uint8_t* const* frames, const int* pitches, const int* widths, const int* heights,
                            const int* resized, const float* scales, int frame_count, int canvas, int swap_rb,
                            float mean, float scale, int half, void* out) {
    for (int f = 0; f < frame_count; ++f) {
        char* frame_out = (char*)out + (long long)f * 3 * canvas * canvas * (half ? 2 : 4);
        for (int y = 0; y < canvas; ++y)
            for (int x = 0; x < canvas; ++x) {
                float value[3];
                letterbox_pixel(frames[f], pitches[f], widths[f], heights[f], resized[2 * f], resized[2 * f + 1],
                                scales[2 * f], scales[2 * f + 1], swap_rb, mean, scale, x, y, value);
                store_nchw(frame_out, half, canvas, x, y, value);
            }
    }
}

void simswap_parsing_blend_host(void* swapped, int half_out, const void* targets, int half_in, const float* masks,
                                const int* faces, int count, int size) {
    long long values = 3LL * size * size;
    for (int k = 0; k < count; ++k)
        for (int y = 0; y < size; ++y)
            for (int x = 0; x < size; ++x)
                parsing_blend_pixel((char*)swapped + faces[k] * values * (half_out ? 2 : 4), half_out,
                                    (const char*)targets + faces[k] * values * (half_in ? 2 : 4), half_in,
                                    masks + (long long)k * size * size, size, x, y);
}

void simswap_parser_input_host(const void* targets, int half, int faces, int size, float* out) {
    const long long plane = (long long)SIMSWAP_PARSING_SIZE * SIMSWAP_PARSING_SIZE;
    for (long long face = 0; face < faces; ++face) {
        const char* target = (const char*)targets + face * 3LL * size * size * (half ? 2 : 4);
        for (int c = 0; c < 3; ++c)
            for (int y = 0; y < SIMSWAP_PARSING_SIZE; ++y)
                for (int x = 0; x < SIMSWAP_PARSING_SIZE; ++x)
                    out[(face * 3 + c) * plane + (long long)y * SIMSWAP_PARSING_SIZE + x] =
                        parser_input_value(target, half, size, x, y, c);
    }
}

void simswap_parser_labels_host(const float* logits, int faces, uint8_t* labels) {
    const long long plane = (long long)SIMSWAP_PARSING_SIZE * SIMSWAP_PARSING_SIZE;
    for (long long face = 0; face < faces; ++face)
        for (long long index = 0; index < plane; ++index)
            labels[face * plane + index] = parser_label(logits + face * SIMSWAP_PARSING_CLASSES * plane, index);
}

void simswap_enhancer_input_host(const uint8_t* const* frames, const int* pitches, const int* widths,
                                 const int* heights, const int* frame_of_face, const Affine* inverse,
                                 const Affine* to_swap, const void* swapped, int half_in, int swap_size, int faces,
                                 int size, int half_out, void* out) {
    for (int face = 0; face < faces; ++face) {
        int f = frame_of_face[face];
        const char* swap = (const char*)swapped + (long long)face * 3 * swap_size * swap_size * (half_in ? 2 : 4);
        char* face_out = (char*)out + (long long)face * 3 * size * size * (half_out ? 2 : 4);
        for (int y = 0; y < size; ++y)
            for (int x = 0; x < size; ++x) {
                float rgb[3];
                enhancer_input_pixel(frames[f], pitches[f], widths[f], heights[f], inverse[face], swap, half_in,
                                     swap_size, to_swap[face], x, y, rgb);
                store_nchw(face_out, half_out, size, x, y, rgb);
            }
    }
}

void simswap_enhance_blend_host(void* enhanced, int half_out, const void* inputs, int half_in, float blend,
                                long long count) {
    for (long long i = 0; i < count; ++i)
        store_value(enhanced, half_out, i,
                    enhance_blend(load_value(enhanced, half_out, i), load_value(inputs, half_in, i), blend));
}
}
