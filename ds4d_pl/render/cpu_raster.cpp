// Tile compositing of projected Gaussians on CPU: forward and backward of the front-to-back
// alpha blend used by ds4d_pl/render/torch_raster.py (3DGS conventions).
//
// Plain C++17 with a C ABI (loaded through ctypes, so no Python or torch headers and a compile
// of a few seconds); ds4d_pl/render/cpu_raster.py builds it on first use and caches the library.
// Every buffer is allocated by torch on the Python side; this file only reads and writes them.
//
// Layout shared with the Python side:
//   feats   (R, 10)   per (camera, Gaussian) row: mean x, mean y, conic a, b, c, opacity,
//                     r, g, b, depth.
//   rows    (V,)      feats row of every visible Gaussian, camera by camera, front to back.
//   boxes   (V, 4)    inclusive pixel box x0, y0, x1, y1 that holds every pixel the Gaussian
//                     can reach with alpha >= alpha_threshold (non-empty, inside the image).
//   cams    (V,)      camera of every visible Gaussian.
//   offsets (C*TY*TX + 1), list (L,): per tile, the visible Gaussians (positions in rows)
//                     whose box meets the tile, front to back.
//   out     (C, H, W, 5): premultiplied rgb, alpha-weighted depth, alpha.
//
// A pixel at integer index (x, y) has its centre at (x + 0.5, y + 0.5), so with
// mx' = mx - 0.5: dx = x - mx', power = dx (a/2 dx + b dy) + c/2 dy², exactly as the torch
// path computes it. A Gaussian is skipped where alpha < alpha_threshold, alpha is clamped to
// max_alpha, and a pixel stops before the Gaussian that would bring its transmittance below
// min_transmittance (3DGS's early stop).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

constexpr int kFeats = 10;

template <typename T>
struct Splat {
  T mx, my, ha, b, hc, op, pmax;
  T pay[4];  // r, g, b, depth
};

struct Box {
  int32_t x0, y0, x1, y1;
};

// Runs fn(task, thread) for task in [0, n) on up to `threads` threads. Tasks are handed out one
// at a time, so a thread the OS does not schedule for a while (a machine shared with other
// jobs) holds back at most one task instead of a fixed share of them.
template <typename Fn>
void parallel_tasks(int64_t n, int threads, Fn fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (threads == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&](int id) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, id);
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  for (auto& th : pool) th.join();
}

template <typename T>
std::vector<Splat<T>> prepare(const T* feats, const int64_t* rows, int64_t v, double alpha_thr) {
  std::vector<Splat<T>> s(v);
  for (int64_t i = 0; i < v; ++i) {
    const T* f = feats + rows[i] * kFeats;
    Splat<T>& g = s[i];
    g.mx = f[0] - T(0.5);
    g.my = f[1] - T(0.5);
    g.ha = T(0.5) * f[2];
    g.b = f[3];
    g.hc = T(0.5) * f[4];
    g.op = f[5];
    // alpha = op exp(-power) < thr exactly when power > ln(op / thr); past that bound (plus a
    // margin far above rounding error) the exp is skipped, and near it the exact test decides.
    g.pmax = static_cast<T>(std::log(static_cast<double>(f[5]) / alpha_thr) + 1e-3);
    for (int c = 0; c < 4; ++c) g.pay[c] = f[6 + c];
  }
  return s;
}

struct TileGeom {
  int64_t cam, x0, y0, x1, y1;  // pixel range [x0, x1) x [y0, y1)
};

inline TileGeom tile_geom(int64_t tile, int64_t ts, int64_t tx, int64_t ty, int64_t w,
                          int64_t h) {
  const int64_t per_cam = tx * ty;
  const int64_t cam = tile / per_cam, t = tile % per_cam;
  const int64_t x0 = (t % tx) * ts, y0 = (t / tx) * ts;
  return {cam, x0, y0, std::min(x0 + ts, w), std::min(y0 + ts, h)};
}

template <typename T>
void forward(const T* feats, const int64_t* rows, const int32_t* boxes, int64_t v,
             const int64_t* offsets, const int32_t* list, int64_t c, int64_t w, int64_t h,
             int64_t ts, double alpha_thr, double max_alpha, double min_trans, int threads,
             T* out, T* final_trans, int32_t* last) {
  const auto splats = prepare<T>(feats, rows, v, alpha_thr);
  const Box* bx = reinterpret_cast<const Box*>(boxes);
  const int64_t tx = (w + ts - 1) / ts, ty = (h + ts - 1) / ts;
  const T thr = static_cast<T>(alpha_thr), amax = static_cast<T>(max_alpha);
  const T tmin = static_cast<T>(min_trans);
  std::vector<std::vector<T>> trans_buf(threads), acc_buf(threads);
  std::vector<std::vector<int32_t>> last_buf(threads);
  std::vector<std::vector<char>> done_buf(threads);
  parallel_tasks(c * tx * ty, threads, [&](int64_t tile, int id) {
    const TileGeom g = tile_geom(tile, ts, tx, ty, w, h);
    const int64_t tw = g.x1 - g.x0, np = tw * (g.y1 - g.y0);
    auto& trans = trans_buf[id];
    auto& acc = acc_buf[id];
    auto& lst = last_buf[id];
    auto& done = done_buf[id];
    trans.assign(np, T(1));
    acc.assign(np * 5, T(0));
    lst.assign(np, -1);
    done.assign(np, 0);
    int64_t n_done = 0;
    const int64_t begin = offsets[tile], end = offsets[tile + 1];
    for (int64_t k = begin; k < end && n_done < np; ++k) {
      const int32_t s = list[k];
      const Splat<T>& sp = splats[s];
      const Box& b = bx[s];
      const int64_t xa = std::max<int64_t>(b.x0, g.x0), xb = std::min<int64_t>(b.x1 + 1, g.x1);
      const int64_t ya = std::max<int64_t>(b.y0, g.y0), yb = std::min<int64_t>(b.y1 + 1, g.y1);
      for (int64_t y = ya; y < yb; ++y) {
        const T dy = static_cast<T>(y) - sp.my;
        const T cy = sp.hc * (dy * dy);
        const T by = sp.b * dy;
        for (int64_t x = xa; x < xb; ++x) {
          const int64_t p = (y - g.y0) * tw + (x - g.x0);
          if (done[p]) continue;
          const T dx = static_cast<T>(x) - sp.mx;
          const T power = dx * (sp.ha * dx + by) + cy;
          if (!(power <= sp.pmax)) continue;
          const T alpha = std::min(sp.op * std::exp(-power), amax);
          if (!(alpha >= thr)) continue;
          const T after = trans[p] * (T(1) - alpha);
          if (after < tmin) {
            done[p] = 1;
            ++n_done;
            continue;
          }
          const T wgt = alpha * trans[p];
          T* a = &acc[p * 5];
          a[0] += wgt * sp.pay[0];
          a[1] += wgt * sp.pay[1];
          a[2] += wgt * sp.pay[2];
          a[3] += wgt * sp.pay[3];
          a[4] += wgt;
          trans[p] = after;
          lst[p] = static_cast<int32_t>(k - begin);
        }
      }
    }
    for (int64_t y = g.y0; y < g.y1; ++y) {
      for (int64_t x = g.x0; x < g.x1; ++x) {
        const int64_t p = (y - g.y0) * tw + (x - g.x0);
        const int64_t pix = (g.cam * h + y) * w + x;
        for (int ch = 0; ch < 5; ++ch) out[pix * 5 + ch] = acc[p * 5 + ch];
        final_trans[pix] = trans[p];
        last[pix] = lst[p];
      }
    }
  });
}

template <typename T>
void backward(const T* feats, const int64_t* rows, const int32_t* boxes, int64_t v,
              const int64_t* offsets, const int32_t* list, int64_t c, int64_t w, int64_t h,
              int64_t ts, double alpha_thr, double max_alpha, int threads, const T* grad_out,
              const T* final_trans, const int32_t* last, T* grad_feats) {
  const auto splats = prepare<T>(feats, rows, v, alpha_thr);
  const Box* bx = reinterpret_cast<const Box*>(boxes);
  const int64_t tx = (w + ts - 1) / ts, ty = (h + ts - 1) / ts;
  const int64_t n_tiles = c * tx * ty;
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_tiles)));
  const T thr = static_cast<T>(alpha_thr), amax = static_cast<T>(max_alpha);
  // A Gaussian spans several tiles: each tile writes its share into the Gaussian's slot of the
  // tile's list, and one serial pass sums the slots in tile order. The sum is then the same
  // whichever thread ran which tile (bit-identical gradients for any thread count and run).
  std::vector<T> shares(static_cast<size_t>(offsets[n_tiles]) * kFeats, T(0));
  std::vector<std::vector<T>> trans_buf(threads), behind_buf(threads), g_buf(threads);
  std::vector<std::vector<int32_t>> last_buf(threads);
  parallel_tasks(n_tiles, threads, [&](int64_t tile, int id) {
    const TileGeom g = tile_geom(tile, ts, tx, ty, w, h);
    const int64_t tw = g.x1 - g.x0, np = tw * (g.y1 - g.y0);
    auto& trans = trans_buf[id];
    auto& behind = behind_buf[id];  // composite of everything behind the current Gaussian
    auto& go = g_buf[id];
    auto& lst = last_buf[id];
    trans.resize(np);
    behind.assign(np * 5, T(0));
    go.resize(np * 5);
    lst.resize(np);
    int32_t k_max = -1;
    for (int64_t y = g.y0; y < g.y1; ++y) {
      for (int64_t x = g.x0; x < g.x1; ++x) {
        const int64_t p = (y - g.y0) * tw + (x - g.x0);
        const int64_t pix = (g.cam * h + y) * w + x;
        trans[p] = final_trans[pix];
        lst[p] = last[pix];
        k_max = std::max(k_max, last[pix]);
        for (int ch = 0; ch < 5; ++ch) go[p * 5 + ch] = grad_out[pix * 5 + ch];
      }
    }
    const int64_t begin = offsets[tile];
    // Back to front: undo each Gaussian's factor on the transmittance, so every pair sees the
    // transmittance in front of it and the composite of what lies behind it.
    for (int64_t k = k_max; k >= 0; --k) {
      const int32_t s = list[begin + k];
      const Splat<T>& sp = splats[s];
      const Box& b = bx[s];
      const int64_t xa = std::max<int64_t>(b.x0, g.x0), xb = std::min<int64_t>(b.x1 + 1, g.x1);
      const int64_t ya = std::max<int64_t>(b.y0, g.y0), yb = std::min<int64_t>(b.y1 + 1, g.y1);
      T d_mx = 0, d_my = 0, d_a = 0, d_b = 0, d_c = 0, d_op = 0;
      T d_pay[4] = {0, 0, 0, 0};
      for (int64_t y = ya; y < yb; ++y) {
        const T dy = static_cast<T>(y) - sp.my;
        const T cy = sp.hc * (dy * dy);
        const T by = sp.b * dy;
        for (int64_t x = xa; x < xb; ++x) {
          const int64_t p = (y - g.y0) * tw + (x - g.x0);
          if (k > lst[p]) continue;
          const T dx = static_cast<T>(x) - sp.mx;
          const T power = dx * (sp.ha * dx + by) + cy;
          if (!(power <= sp.pmax)) continue;
          const T e = std::exp(-power);
          const T raw = sp.op * e;
          const T alpha = std::min(raw, amax);
          if (!(alpha >= thr)) continue;
          const T one_m = T(1) - alpha;
          const T t_front = trans[p] / one_m;
          const T wgt = alpha * t_front;
          const T* gp = &go[p * 5];
          T* bh = &behind[p * 5];
          // d out / d alpha = T_front (payload - composite behind), per channel.
          T dot = gp[4] * (T(1) - bh[4]);
          for (int ch = 0; ch < 4; ++ch) {
            d_pay[ch] += wgt * gp[ch];
            dot += gp[ch] * (sp.pay[ch] - bh[ch]);
            bh[ch] = alpha * sp.pay[ch] + one_m * bh[ch];
          }
          bh[4] = alpha + one_m * bh[4];
          trans[p] = t_front;
          if (raw <= amax) {  // the clamp passes the gradient up to and including max_alpha
            const T d_alpha = t_front * dot;
            d_op += d_alpha * e;
            const T d_power = -d_alpha * raw;
            // power = dx (a/2 dx + b dy) + c/2 dy², with dx = x - mx' and dy = y - my'.
            d_mx -= d_power * (T(2) * sp.ha * dx + sp.b * dy);
            d_my -= d_power * (sp.b * dx + T(2) * sp.hc * dy);
            d_a += d_power * T(0.5) * dx * dx;
            d_b += d_power * dx * dy;
            d_c += d_power * T(0.5) * dy * dy;
          }
        }
      }
      T* out = shares.data() + (begin + k) * kFeats;
      out[0] = d_mx;
      out[1] = d_my;
      out[2] = d_a;
      out[3] = d_b;
      out[4] = d_c;
      out[5] = d_op;
      for (int ch = 0; ch < 4; ++ch) out[6 + ch] = d_pay[ch];
    }
  });
  std::vector<T> sums(static_cast<size_t>(v) * kFeats, T(0));
  for (int64_t k = 0; k < offsets[n_tiles]; ++k) {
    T* dst = sums.data() + static_cast<int64_t>(list[k]) * kFeats;
    const T* src = shares.data() + k * kFeats;
    for (int f = 0; f < kFeats; ++f) dst[f] += src[f];
  }
  for (int64_t i = 0; i < v; ++i) {
    std::copy_n(sums.data() + i * kFeats, kFeats, grad_feats + rows[i] * kFeats);
  }
}

// Per-tile lists, front to back: count, prefix sum, then fill in visiting order.
void bin(const int32_t* boxes, const int64_t* cams, int64_t v, int64_t ts, int64_t tx,
         int64_t ty, int64_t c, int64_t* offsets, int32_t* list) {
  const Box* bx = reinterpret_cast<const Box*>(boxes);
  const int64_t n_tiles = c * tx * ty;
  std::vector<int64_t> cursor(n_tiles + 1, 0);
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < v; ++i) {
      const Box& b = bx[i];
      const int64_t base = cams[i] * tx * ty;
      for (int64_t y = b.y0 / ts; y <= b.y1 / ts; ++y) {
        for (int64_t x = b.x0 / ts; x <= b.x1 / ts; ++x) {
          const int64_t t = base + y * tx + x;
          if (pass == 0) {
            ++cursor[t + 1];
          } else {
            list[cursor[t]++] = static_cast<int32_t>(i);
          }
        }
      }
    }
    if (pass == 0) {
      for (int64_t t = 0; t < n_tiles; ++t) cursor[t + 1] += cursor[t];
      std::copy(cursor.begin(), cursor.end(), offsets);
    }
  }
}

}  // namespace

extern "C" {

// Version of this ABI; the Python side refuses a library that reports another one.
int ds4d_raster_abi() { return 1; }

void ds4d_raster_bin(const int32_t* boxes, const int64_t* cams, int64_t v, int64_t ts, int64_t tx,
                     int64_t ty, int64_t c, int64_t* offsets, int32_t* list) {
  bin(boxes, cams, v, ts, tx, ty, c, offsets, list);
}

#define DS4D_EXPORT(NAME, T)                                                                     \
  void ds4d_raster_forward_##NAME(const T* feats, const int64_t* rows, const int32_t* boxes,     \
                                  int64_t v, const int64_t* offsets, const int32_t* list,        \
                                  int64_t c, int64_t w, int64_t h, int64_t ts, double alpha_thr, \
                                  double max_alpha, double min_trans, int threads, T* out,       \
                                  T* final_trans, int32_t* last) {                               \
    forward<T>(feats, rows, boxes, v, offsets, list, c, w, h, ts, alpha_thr, max_alpha,          \
               min_trans, threads, out, final_trans, last);                                      \
  }                                                                                              \
  void ds4d_raster_backward_##NAME(const T* feats, const int64_t* rows, const int32_t* boxes,    \
                                   int64_t v, const int64_t* offsets, const int32_t* list,       \
                                   int64_t c, int64_t w, int64_t h, int64_t ts,                  \
                                   double alpha_thr, double max_alpha, int threads,              \
                                   const T* grad_out, const T* final_trans, const int32_t* last, \
                                   T* grad_feats) {                                              \
    backward<T>(feats, rows, boxes, v, offsets, list, c, w, h, ts, alpha_thr, max_alpha,         \
                threads, grad_out, final_trans, last, grad_feats);                               \
  }

DS4D_EXPORT(f32, float)
DS4D_EXPORT(f64, double)

}  // extern "C"
