"""Pure-Python matrix utilities: multiplication, transpose and identity.

Matrices are lists of equal-length row lists. The multiplication routine
iterates in i-k-j order, which reuses each element of the left matrix
across a whole output row and is noticeably faster than the naive i-j-k
loop in CPython.
"""


def shape(matrix):
    """Return (rows, columns), checking that all rows have equal length."""
    rows = len(matrix)
    cols = len(matrix[0]) if rows else 0
    if any(len(row) != cols for row in matrix):
        raise ValueError("ragged matrix: rows have different lengths")
    return rows, cols


def identity(n):
    """Return the n x n identity matrix."""
    return [[1 if i == j else 0 for j in range(n)] for i in range(n)]


def transpose(matrix):
    """Swap rows and columns."""
    return [list(col) for col in zip(*matrix)]


def matmul(a, b):
    """Multiply matrix ``a`` (m x n) by matrix ``b`` (n x p)."""
    m, n = shape(a)
    n2, p = shape(b)
    if n != n2:
        raise ValueError(f"cannot multiply {m}x{n} by {n2}x{p}")
    result = [[0] * p for _ in range(m)]
    for i in range(m):
        out_row = result[i]
        for k in range(n):
            a_ik = a[i][k]
            if a_ik == 0:
                continue  # skip work for sparse rows
            b_row = b[k]
            for j in range(p):
                out_row[j] += a_ik * b_row[j]
    return result


def matpow(matrix, exponent):
    """Raise a square matrix to a non-negative integer power by squaring."""
    n, cols = shape(matrix)
    if n != cols:
        raise ValueError("matrix must be square")
    result, base = identity(n), matrix
    while exponent > 0:
        if exponent & 1:
            result = matmul(result, base)
        base = matmul(base, base)
        exponent >>= 1
    return result


def pretty(matrix):
    """Return a right-aligned string rendering of the matrix."""
    width = max(len(str(x)) for row in matrix for x in row)
    return "\n".join(" ".join(str(x).rjust(width) for x in row) for row in matrix)


if __name__ == "__main__":
    a = [[1, 2, 3], [4, 5, 6]]
    b = [[7, 8], [9, 10], [11, 12]]
    print(pretty(matmul(a, b)))          # [[58, 64], [139, 154]]
    print(pretty(transpose(a)))
    # The Fibonacci matrix [[1,1],[1,0]]^n holds F(n+1), F(n), F(n-1).
    print("F(90) =", matpow([[1, 1], [1, 0]], 90)[0][1])
