"""An unbalanced binary search tree supporting insert, search and delete.

Each node's left subtree holds smaller keys and its right subtree holds
larger keys, so an in-order traversal yields the keys in sorted order.
"""


class Node:
    """A single tree node holding a key, a value and two children."""

    __slots__ = ("key", "value", "left", "right")

    def __init__(self, key, value=None):
        self.key = key
        self.value = value
        self.left = None
        self.right = None


class BinarySearchTree:
    """Ordered map backed by a plain binary search tree."""

    def __init__(self):
        self.root = None
        self.size = 0

    def insert(self, key, value=None):
        """Add ``key`` to the tree, replacing the value if it exists."""
        if self.root is None:
            self.root = Node(key, value)
            self.size = 1
            return
        node = self.root
        while True:
            if key == node.key:
                node.value = value
                return
            side = "left" if key < node.key else "right"
            child = getattr(node, side)
            if child is None:
                setattr(node, side, Node(key, value))
                self.size += 1
                return
            node = child

    def find(self, key):
        """Return the node for ``key`` or None if it is absent."""
        node = self.root
        while node is not None and node.key != key:
            node = node.left if key < node.key else node.right
        return node

    def delete(self, key):
        """Remove ``key`` from the tree; return True if it was present."""
        self.root, removed = self._delete(self.root, key)
        if removed:
            self.size -= 1
        return removed

    def _delete(self, node, key):
        if node is None:
            return None, False
        if key < node.key:
            node.left, removed = self._delete(node.left, key)
            return node, removed
        if key > node.key:
            node.right, removed = self._delete(node.right, key)
            return node, removed
        # Found it. Nodes with zero or one child are spliced out directly.
        if node.left is None:
            return node.right, True
        if node.right is None:
            return node.left, True
        # Two children: copy the in-order successor, then delete it.
        successor = node.right
        while successor.left is not None:
            successor = successor.left
        node.key, node.value = successor.key, successor.value
        node.right, _ = self._delete(node.right, successor.key)
        return node, True

    def inorder(self):
        """Yield keys in ascending order using an explicit stack."""
        stack, node = [], self.root
        while stack or node is not None:
            while node is not None:
                stack.append(node)
                node = node.left
            node = stack.pop()
            yield node.key
            node = node.right

    def height(self, node=None, _start=True):
        """Return the number of levels in the tree (0 when empty)."""
        if _start:
            node = self.root
        if node is None:
            return 0
        return 1 + max(self.height(node.left, False), self.height(node.right, False))


if __name__ == "__main__":
    tree = BinarySearchTree()
    for k in [50, 30, 70, 20, 40, 60, 80, 35]:
        tree.insert(k, str(k))
    print(list(tree.inorder()), "height", tree.height())
    tree.delete(30)
    print(list(tree.inorder()), "size", tree.size, "find 35:", tree.find(35).value)
