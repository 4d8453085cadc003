#!/usr/bin/env python3
"""Emulates the ldmatrix / mma.sync.m16n8k16 fragment addressing of native/grouped_gemm_mma.cuh
for every operand layout (K-major / MN-major A and B, BN 128 and 64) with numpy and checks one k-tile
of every warp against a plain matrix product. No GPU needed: /usr/bin/python3 scripts/gpu-peers/mma_fragment_emulation.py
(PTX ISA fragment layouts: ldmatrix thread l gets row l/4, cols 2(l%4)+{0,1}; .trans the transpose)."""
import numpy as np
rng = np.random.default_rng(1)

def ldmatrix(smem, addrs, trans):
    # addrs[i] = flat element index of the 8-element row provided by thread i (x4: matrices q = i // 8)
    regs = np.zeros((32, 4, 2))
    for q in range(4):
        M = np.array([smem[addrs[q * 8 + j]: addrs[q * 8 + j] + 8] for j in range(8)])  # row j of matrix q
        for l in range(32):
            g, c = l // 4, l % 4
            if not trans:
                regs[l, q] = M[g, 2 * c: 2 * c + 2]
            else:
                regs[l, q] = [M[2 * c, g], M[2 * c + 1, g]]
    return regs

def mma(a, b):  # a: [32,4,2], b: [32,2,2] -> C [16,8]
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for l in range(32):
        g, c = l // 4, l % 4
        A[g, 2*c:2*c+2] = a[l, 0]; A[g+8, 2*c:2*c+2] = a[l, 1]
        A[g, 2*c+8:2*c+10] = a[l, 2]; A[g+8, 2*c+8:2*c+10] = a[l, 3]
        B[2*c:2*c+2, g] = b[l, 0]; B[2*c+8:2*c+10, g] = b[l, 1]
    return A @ B

BM, BK = 128, 32
for A_KM in (True, False):
    for B_KM in (True, False):
        for BN in (128, 64):
            Am = rng.standard_normal((BM, BK)); Bm = rng.standard_normal((BN, BK))  # logical A[m,k], B[n,k]
            if A_KM: LDA = BK + 8; sA = np.zeros(BM * LDA); [sA.__setitem__(slice(m*LDA, m*LDA+BK), Am[m]) for m in range(BM)]
            else: LDA = BM + 8; sA = np.zeros(BK * LDA); [sA.__setitem__(slice(k*LDA, k*LDA+BM), Am[:, k]) for k in range(BK)]
            if B_KM: LDB = BK + 8; sB = np.zeros(BN * LDB); [sB.__setitem__(slice(n*LDB, n*LDB+BK), Bm[n]) for n in range(BN)]
            else: LDB = BN + 8; sB = np.zeros(BK * LDB); [sB.__setitem__(slice(k*LDB, k*LDB+BN), Bm[:, k]) for k in range(BK)]
            NT = BN // 32
            ok = True
            for warp in range(8):
                wm0 = (warp >> 2) * 64; wn0 = (warp & 3) * (BN // 4)
                acc = np.zeros((4, NT, 16, 8))
                for kk in (0, 16):
                    af = []
                    for i in range(4):
                        m = wm0 + i * 16
                        if A_KM: addrs = [(m + (l & 15)) * LDA + kk + (l >> 4) * 8 for l in range(32)]
                        else: addrs = [(kk + (l & 7) + ((l >> 3) >> 1) * 8) * LDA + m + ((l >> 3) & 1) * 8 for l in range(32)]
                        af.append(ldmatrix(sA, addrs, not A_KM))
                    bf = [None] * NT
                    for jp in range(NT // 2):
                        n = wn0 + jp * 16
                        if B_KM: addrs = [(n + (l & 7) + ((l >> 3) >> 1) * 8) * LDB + kk + ((l >> 3) & 1) * 8 for l in range(32)]
                        else: addrs = [(kk + (l & 7) + ((l >> 3) & 1) * 8) * LDB + n + ((l >> 3) >> 1) * 8 for l in range(32)]
                        r = ldmatrix(sB, addrs, not B_KM)
                        bf[2*jp] = np.stack([r[:, 0], r[:, 1]], axis=1); bf[2*jp+1] = np.stack([r[:, 2], r[:, 3]], axis=1)
                    for i in range(4):
                        for j in range(NT):
                            acc[i, j] += mma(af[i], bf[j])
                for i in range(4):
                    for j in range(NT):
                        ref = Am[wm0+i*16: wm0+i*16+16] @ Bm[wn0+j*8: wn0+j*8+8].T
                        ok &= np.allclose(acc[i, j], ref)
            print(f"A_KM={A_KM} B_KM={B_KM} BN={BN}: {'OK' if ok else 'MISMATCH'}")
