def fibonacci(n):
    """Return the n-th Fibonacci number."""
    
    return a


print(fibonacci(10))
